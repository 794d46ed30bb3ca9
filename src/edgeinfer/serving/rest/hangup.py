"""Cancel a request's work when its HTTP client hangs up before the answer.

gRPC cancels a call whose client went away; over HTTP the ASGI server only says so through
``receive()``, which, once the body has been read, returns ``http.disconnect`` when the
connection drops. Watching for it while the model works lets a request whose client gave up
(a client-side timeout, a closed browser tab) leave the batch queue instead of being computed for
nobody, and be counted ``cancelled`` rather than answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from edgeinfer.serving.rest.body import ClientDisconnected, Receive

T = TypeVar("T")


async def unless_hung_up(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, cancelled (raising :class:`ClientDisconnected`) if the client hangs up
    first. Call it once the request's body has been read: the watch takes what ``receive`` says."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass  # nothing else can come once the body is read
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch(), name="hang-up watch")
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()

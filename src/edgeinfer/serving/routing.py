"""What the server needs to know of request routing, without depending on who routes.

An offload policy other than ``edge`` makes the data plane hand image requests to an
:class:`Offload` (built by the factory the server is given; ``edgeinfer serve`` passes
:class:`edgeinfer.network.serve_offload.ServerOffload`). The answers say where they were served:
v2 response parameters, and for HTTP the headers below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry

from edgeinfer.serving.protocol import ClassifyResponse, InferRequest, InferResponse, Parameters
from edgeinfer.serving.settings import ServeSettings

if TYPE_CHECKING:
    from edgeinfer.serving.servable import Servable

#: Response parameters (v2) that say where a request was served; also sent as HTTP headers.
ROUTE_HEADERS = {
    "served_by": b"edgeinfer-served-by",
    "offload_reason": b"edgeinfer-offload-reason",
    "offload_fallback": b"edgeinfer-offload-fallback",
}


@dataclass(frozen=True)
class RoutedClassifyResponse(ClassifyResponse):
    """A ``/v1/.../classify`` answer with the route it took (sent as headers; the body is unchanged)."""

    parameters: Parameters = field(default_factory=dict)


def route_headers(parameters: Parameters) -> list[tuple[bytes, bytes]]:
    """The HTTP headers of the route parameters present in a response."""
    return [
        (header, str(parameters[key]).encode()) for key, header in ROUTE_HEADERS.items() if key in parameters
    ]


class Offload(Protocol):
    """Routes the image requests of the served models (``start`` after they are loaded and warm)."""

    async def start(self, servables: Mapping[str, Servable]) -> None: ...

    async def close(self) -> None: ...

    async def infer(self, servable: Servable, request: InferRequest, deadline_ns: int) -> InferResponse: ...

    async def classify(
        self, servable: Servable, image: bytes, top_k: int, deadline_ns: int
    ) -> ClassifyResponse: ...


#: Builds the server's :class:`Offload` from its settings and metrics registry.
OffloadFactory = Callable[[ServeSettings, CollectorRegistry], Offload]

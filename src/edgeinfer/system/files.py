"""Writing a file so that readers, other processes included, see the old one or the new one whole."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_NEW_FILE_MODE = 0o666  # less the umask, as open() would create it
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it over ``path``.

    The folder must exist. A failure leaves ``path`` as it was and no temporary file behind. A new
    file gets the mode ``open()`` would give it (the umask applies); a replaced file keeps its mode.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    handle, staging = _create_beside(path)
    try:
        with os.fdopen(handle, "wb") as out:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(staging, stat.S_IMODE(path.stat().st_mode))
            out.write(raw)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def updating(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (``.<name>.lock``, kept) while a read-merge-write of
    it runs: two processes merging into one file at once lose neither's entries. The folder must
    exist."""
    with open(path.parent / f".{path.name}.lock", "a") as handle, exclusively(handle):
        yield


@contextlib.contextmanager
def exclusively(handle: IO[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open ``handle`` (other processes wait their turn)."""
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _create_beside(path: Path) -> tuple[int, str]:
    """A new, empty, exclusively created file in ``path``'s folder (unlike mkstemp, umask applies)."""
    while True:
        staging = str(path.parent / f".{path.name}.{secrets.token_hex(4)}")
        try:
            return os.open(staging, _FLAGS, _NEW_FILE_MODE), staging
        except FileExistsError:
            continue

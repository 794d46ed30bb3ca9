"""Atomic writes: a reader sees the old file or the new one, never a part, and failures leave no litter."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeinfer.system import files
from edgeinfer.system.files import write_atomically


def test_text_and_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "cache.json"
    write_atomically(target, '{"a": "é"}')
    assert target.read_text(encoding="utf-8") == '{"a": "é"}'
    write_atomically(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_a_new_file_honours_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    fresh = tmp_path / "report.json"
    write_atomically(fresh, "{}")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # as open() would create it, not mkstemp's 0600
    private = tmp_path / "token"
    private.write_text("old")
    private.chmod(0o600)
    write_atomically(private, "new")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == "new"

"""Request bodies: gzip and deflate inflated within the size limit, whatever else refused."""

from __future__ import annotations

import gzip
import zlib

import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.rest.body import _inflate
from edgeinfer.serving.rest.errors import BodyTooLarge

DATA = bytes(range(256)) * 40


def test_gzip_members_are_read_one_after_the_other_and_zero_padding_ignored() -> None:
    assert _inflate(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]), "gzip", 1 << 20) == DATA
    assert _inflate(gzip.compress(DATA) + b"\x00" * 16, "GZIP", 1 << 20) == DATA
    assert _inflate(zlib.compress(DATA), "deflate", 1 << 20) == DATA


@pytest.mark.parametrize(
    ("body", "encoding", "error", "said"),
    [
        (gzip.compress(DATA) + b"JUNK", "gzip", InvalidInput, "4 bytes after its compressed data"),
        (zlib.compress(DATA) + b"J", "deflate", InvalidInput, "1 bytes after its compressed data"),
        (gzip.compress(DATA)[:-9], "gzip", InvalidInput, "truncated"),
        (gzip.compress(DATA) + gzip.compress(DATA)[:30], "gzip", InvalidInput, "truncated"),
        (b"not gzip at all", "gzip", InvalidInput, "corrupt"),
        (gzip.compress(DATA) + gzip.compress(DATA), "gzip", BodyTooLarge, "inflates past the limit of 15000"),
        (DATA, "br", InvalidInput, "'br' is not supported"),
    ],
)
def test_what_an_encoded_body_is_refused_for(body: bytes, encoding: str, error: type, said: str) -> None:
    with pytest.raises(error, match=said):
        _inflate(body, encoding, 15_000)

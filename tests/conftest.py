"""Shared fixtures: one model repository per test session, real sample photos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeinfer.imaging.samples import available_photos
from edgeinfer.models.repository import HOME_ENV, ModelRepository


@pytest.fixture(scope="session")
def edgeinfer_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A model repository root for the whole session, also exported to subprocesses."""
    home = tmp_path_factory.mktemp("edgeinfer-home")
    old = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    yield home
    if old is None:
        os.environ.pop(HOME_ENV, None)
    else:
        os.environ[HOME_ENV] = old


@pytest.fixture(scope="session")
def repo(edgeinfer_home: Path) -> ModelRepository:
    return ModelRepository(edgeinfer_home)


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    found = available_photos()
    if "chelsea" not in found:
        pytest.skip(
            "sample photos need scikit-image, matplotlib and scikit-learn (pip install 'edgeinfer[samples]')"
        )
    return found

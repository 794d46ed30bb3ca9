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


# lease id -> the test package that held it when one of its modules ended
_lease_owners: dict[int, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test package gives back the CPU threads its runtimes took (close your engines).

    A leaked runtime holds threads from the process-wide budget, and a later test then fails to
    load with Overloaded; this names the package that leaked instead. Package-scoped fixtures may
    keep an engine open across that package's modules.
    """
    import gc

    from edgeinfer.system.threads import process_budget

    package = request.module.__name__.rpartition(".")[0]
    gc.collect()
    budget = process_budget()
    stale = [lease for lease in budget.leases if _lease_owners.get(lease.lease_id, package) != package]
    for lease in stale:
        budget.release(lease)
    if stale:
        culprits = sorted({_lease_owners[lease.lease_id] for lease in stale})
        pytest.fail(f"{', '.join(culprits)} left runtimes open holding CPU threads", pytrace=False)
    yield
    for lease in budget.leases:
        _lease_owners.setdefault(lease.lease_id, package)

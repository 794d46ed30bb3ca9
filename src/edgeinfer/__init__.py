"""edgeinfer: real-time AI inference at the edge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgeinfer.engine.engine import Classification, Engine, EngineOptions, Prediction, StageTimings

__all__ = ["Classification", "Engine", "EngineOptions", "Prediction", "StageTimings", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import edgeinfer` stays cheap (the CLI imports only what a command needs).
    if name in ("Classification", "Engine", "EngineOptions", "Prediction", "StageTimings"):
        from edgeinfer.engine import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'edgeinfer' has no attribute {name!r}")

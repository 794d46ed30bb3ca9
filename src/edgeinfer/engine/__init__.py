"""The inference engine."""

from edgeinfer.engine.engine import Engine, EngineOptions
from edgeinfer.engine.results import Classification, Prediction, StageTimings

__all__ = ["Classification", "Engine", "EngineOptions", "Prediction", "StageTimings"]

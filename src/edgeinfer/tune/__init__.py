"""Auto-tuning: search runtime x precision x threads x batch size on this device."""

from edgeinfer.tune.search import Trial, TuneResult, TuneSpace, search
from edgeinfer.tune.store import tuned_choice, tuned_entry, tuned_threads, tuning_path

__all__ = [
    "Trial",
    "TuneResult",
    "TuneSpace",
    "search",
    "tuned_choice",
    "tuned_entry",
    "tuned_threads",
    "tuning_path",
]

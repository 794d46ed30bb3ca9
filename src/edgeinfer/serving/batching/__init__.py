"""Deadline-aware dynamic batching: EDF queue, measured compute profile, the batcher."""

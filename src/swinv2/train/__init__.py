"""Training: the loop, its schedule and its per-epoch measurements."""

from swinv2.train.loop import EpochStats, TrainingSettings, fit, warmup_cosine

__all__ = ["EpochStats", "TrainingSettings", "fit", "warmup_cosine"]

"""Training: fine-tuning runs (`train`, `TrainConfig`) and the pieces they are built from, for people who
write their own loop: optimiser groups and schedule (`optim`), data (`data`), checkpoints that resume
exactly (`checkpoint`), evaluation and curves (`metrics`), torch.distributed set-up (`distributed`)."""

from swinv2.train.checkpoint import load_training_checkpoint, save_training_checkpoint
from swinv2.train.data import DeterministicSampler, load_classification_data
from swinv2.train.metrics import Evaluation, evaluate
from swinv2.train.optim import WarmupCosine, build_optimizer, parameter_groups
from swinv2.train.trainer import TrainConfig, TrainingStopped, TrainResult, train

__all__ = [
    "DeterministicSampler",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "WarmupCosine",
    "build_optimizer",
    "evaluate",
    "load_classification_data",
    "load_training_checkpoint",
    "parameter_groups",
    "save_training_checkpoint",
    "train",
]

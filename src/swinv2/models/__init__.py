"""Swin V2 model classes."""

from swinv2.models.base import Swinv2PreTrainedModel
from swinv2.models.outputs import (
    BackboneOutput,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2ModelOutput,
)
from swinv2.models.swinv2 import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)

__all__ = [
    "BackboneOutput",
    "Swinv2Backbone",
    "Swinv2ForImageClassification",
    "Swinv2ForMaskedImageModeling",
    "Swinv2ImageClassifierOutput",
    "Swinv2MaskedImageModelingOutput",
    "Swinv2Model",
    "Swinv2ModelOutput",
    "Swinv2PreTrainedModel",
]

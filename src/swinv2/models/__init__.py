"""Swin V2 and Swin2SR model classes."""

from swinv2.models.base import PreTrainedModel, Swinv2PreTrainedModel
from swinv2.models.outputs import (
    BackboneOutput,
    Swin2SRImageSuperResolutionOutput,
    Swin2SRModelOutput,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2ModelOutput,
)
from swinv2.models.swin2sr import Swin2SRForImageSuperResolution, Swin2SRModel, Swin2SRPreTrainedModel
from swinv2.models.swinv2 import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)

__all__ = [
    "BackboneOutput",
    "PreTrainedModel",
    "Swin2SRForImageSuperResolution",
    "Swin2SRImageSuperResolutionOutput",
    "Swin2SRModel",
    "Swin2SRModelOutput",
    "Swin2SRPreTrainedModel",
    "Swinv2Backbone",
    "Swinv2ForImageClassification",
    "Swinv2ForMaskedImageModeling",
    "Swinv2ImageClassifierOutput",
    "Swinv2MaskedImageModelingOutput",
    "Swinv2Model",
    "Swinv2ModelOutput",
    "Swinv2PreTrainedModel",
]

"""swinv2: Swin Transformer V2 in PyTorch, interchangeable with transformers' Swinv2 and Swin2SR classes.

Example:
    >>> from swinv2 import Swinv2Config, Swinv2ForImageClassification
    >>> model = Swinv2ForImageClassification(Swinv2Config(image_size=256, window_size=8, num_labels=10))
    >>> model.save_pretrained("my-model")  # config.json + model.safetensors, loadable by transformers
"""

from swinv2 import backends  # registers the fast paths
from swinv2.config import Swin2SRConfig, Swinv2Config
from swinv2.io.checkpoints import CheckpointError, LoadReport
from swinv2.io.errors import ConfigError, InputError, LimitError
from swinv2.io.layouts import detect_layout
from swinv2.io.limits import memory_limit, set_memory_limit
from swinv2.loading import load_checkpoint, save_swin2sr_original, save_timm
from swinv2.models import (
    BackboneOutput,
    Swin2SRForImageSuperResolution,
    Swin2SRImageSuperResolutionOutput,
    Swin2SRModel,
    Swin2SRModelOutput,
    Swin2SRPreTrainedModel,
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2Model,
    Swinv2ModelOutput,
    Swinv2PreTrainedModel,
)
from swinv2.preprocess import ImageError, Swinv2ImageProcessor
from swinv2.rewindow import rewindow
from swinv2.superres import Swin2SRImageProcessor
from swinv2.zoo import Variant, get_variant, list_variants

__version__ = "0.1.0"

__all__ = [
    "BackboneOutput",
    "CheckpointError",
    "ConfigError",
    "ImageError",
    "InputError",
    "LimitError",
    "LoadReport",
    "Swin2SRConfig",
    "Swin2SRForImageSuperResolution",
    "Swin2SRImageProcessor",
    "Swin2SRImageSuperResolutionOutput",
    "Swin2SRModel",
    "Swin2SRModelOutput",
    "Swin2SRPreTrainedModel",
    "Swinv2Backbone",
    "Swinv2Config",
    "Swinv2ForImageClassification",
    "Swinv2ForMaskedImageModeling",
    "Swinv2ImageClassifierOutput",
    "Swinv2ImageProcessor",
    "Swinv2MaskedImageModelingOutput",
    "Swinv2Model",
    "Swinv2ModelOutput",
    "Swinv2PreTrainedModel",
    "Variant",
    "__version__",
    "backends",
    "detect_layout",
    "get_variant",
    "list_variants",
    "load_checkpoint",
    "memory_limit",
    "rewindow",
    "save_swin2sr_original",
    "save_timm",
    "set_memory_limit",
]

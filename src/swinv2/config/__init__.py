"""The configs: `Swinv2Config` (`swinv2.config.swinv2`) and `Swin2SRConfig` (`swinv2.config.swin2sr`).

Each is data, validation in one place and transformers' config.json form, nothing else; what they
share (value checks, JSON and file handling, transformers' key lists) is `swinv2.config.common`.
"""

from swinv2.config.common import (
    ACTIVATIONS,
    ATTN_IMPLEMENTATIONS,
    CONFIG_NAME,
    DTYPES,
    LEGACY_TRANSFORMERS_KEYS,
    MAX_DEPTH,
    MAX_SIZE,
    MAX_STAGES,
    TRANSFORMERS_KEYS,
)
from swinv2.config.swin2sr import RESI_CONNECTIONS, UPSAMPLERS, Swin2SRConfig
from swinv2.config.swinv2 import MAX_LABELS, MODEL_TYPE, PROBLEM_TYPES, Swinv2Config, unknown_keys

__all__ = [
    "ACTIVATIONS",
    "ATTN_IMPLEMENTATIONS",
    "CONFIG_NAME",
    "DTYPES",
    "LEGACY_TRANSFORMERS_KEYS",
    "MAX_DEPTH",
    "MAX_LABELS",
    "MAX_SIZE",
    "MAX_STAGES",
    "MODEL_TYPE",
    "PROBLEM_TYPES",
    "RESI_CONNECTIONS",
    "TRANSFORMERS_KEYS",
    "UPSAMPLERS",
    "Swin2SRConfig",
    "Swinv2Config",
    "unknown_keys",
]

"""Export: ONNX files that onnxruntime runs, and `torch.export` programs, for every model of the library.

Both go through `torch.export` on the model's plain PyTorch ops (`swinv2.backends.plain`): the fast paths
(packed weights, hand-written autograd nodes) step aside, and the cached attention terms (position bias,
shift masks) are computed inside the traced call, so they become constants of the graph rather than
tensors traced at one batch size. The ONNX file is written by PyTorch's dynamo-based exporter (the
legacy TorchScript exporter bakes shapes into such a graph and gives wrong results at other batch sizes).

What can be dynamic: the batch. Height and width are fixed at export (`image_size`): the window
arithmetic (padding to whole windows, the shift masks) is resolved at the export size. Export once per
input size (tiled super-resolution runs one size anyway).

The ONNX file carries what a runtime needs besides the graph, as metadata (`metadata_props`): the
model's config, its labels and its preprocessing, so `swinv2 classify --onnx FILE` runs it through
onnxruntime without the model code.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swinv2.backends import GRAPH, plain
from swinv2.io.errors import InputError
from swinv2.io.files import atomic_write
from swinv2.models import (
    Swin2SRForImageSuperResolution,
    Swin2SRModel,
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)
from swinv2.models.base import PreTrainedModel
from swinv2.runtime import CLASS_KEY, CONFIG_KEY, INPUT_NAME, LABELS_KEY, PREPROCESSING_KEY

FORMATS = ("onnx", "exported-program")
DEFAULT_OPSET = 20  # the first with a Gelu operator (ONNX Runtime fuses it with the bias before it)
# Constant folding folds subgraphs whose inputs and outputs have at most this many elements: the position
# bias with its shift mask (nW*nH*N*N, about 0.8 M at 256 px) and the stacked q/k/v weights (3C*C) of
# every block become constants; the onnxscript optimizer's defaults (8192 and 262144) leave them computed
# at every call.
FOLD_LIMIT = 1 << 24
#: The largest difference to PyTorch's output that `verify_onnx` accepts (fp32).
TOLERANCE = 1e-4


class ExportError(InputError):
    """A model or setting that cannot be exported as asked; the message says what can."""


def output_names(model: nn.Module) -> list[str]:
    """The names of the graph's outputs: the model's main fields, in order."""
    if isinstance(model, Swinv2ForImageClassification):
        return ["logits"]
    if isinstance(model, Swinv2Backbone):
        return list(model.out_features)
    if isinstance(model, (Swinv2ForMaskedImageModeling, Swin2SRForImageSuperResolution)):
        return ["reconstruction"]
    if isinstance(model, Swinv2Model):
        return ["last_hidden_state", "pooler_output"] if model.pooler is not None else ["last_hidden_state"]
    if isinstance(model, Swin2SRModel):
        return ["last_hidden_state"]
    raise ExportError(f"cannot export a {type(model).__name__}: not a model of this library")


class _NamedOutputs(nn.Module):
    """The model with a flat tuple of tensors as its output (the graph's named outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.backbone = isinstance(model, Swinv2Backbone)
        self.names = output_names(model)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(pixel_values)
        if self.backbone:
            return tuple(out.feature_maps)
        return tuple(getattr(out, name) for name in self.names)


@dataclass(frozen=True)
class ExportSettings:
    """The input an export is made for: `image_size` (H, W) and an example `batch_size`; `dynamic_batch`
    leaves the batch free in the graph."""

    image_size: tuple[int, int]
    batch_size: int = 1
    dynamic_batch: bool = True
    opset: int = DEFAULT_OPSET

    def example(self, channels: int) -> torch.Tensor:
        # a batch of 2 when the batch is dynamic: torch.export specialises a size-1 dimension
        batch = max(2, self.batch_size) if self.dynamic_batch else self.batch_size
        return torch.rand(batch, channels, *self.image_size)

    def dynamic_shapes(self) -> dict[str, dict[int, Any]] | None:
        return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=4096)}} if self.dynamic_batch else None


def default_size(model: PreTrainedModel) -> tuple[int, int]:
    """The model's own input size (its config's `image_size`)."""
    size = model.config.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def settings_for(
    model: PreTrainedModel,
    image_size: int | Sequence[int] | None = None,
    *,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
) -> ExportSettings:
    """Settings for `model`, checked: sizes positive, the opset one the exporter writes."""
    if image_size is None:
        size = default_size(model)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    if min(size) < 1 or batch_size < 1:
        raise ExportError(f"image size and batch size must be positive; got {size} and {batch_size}")
    if not 17 <= opset <= 23:
        raise ExportError(f"opset must be from 17 to 23 (what PyTorch's exporter writes); got {opset}")
    return ExportSettings(size, batch_size, dynamic_batch, opset)


@contextlib.contextmanager
def graph_backend(model: PreTrainedModel) -> Iterator[None]:
    """Run `model` on the "graph" backend (`swinv2.backends.graph`) and plain ops for the duration."""
    previous = model.config.attn_implementation
    model.set_attn_implementation(GRAPH.name)
    try:
        with plain():
            yield
    finally:
        model.set_attn_implementation(previous)


def export_program(model: PreTrainedModel, settings: ExportSettings) -> torch.export.ExportedProgram:
    """`torch.export` of the model on the "graph" backend in eval mode, returning the named-output tuple."""
    wrapped = _NamedOutputs(model.eval())
    example = settings.example(model.config.num_channels)
    with graph_backend(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(wrapped, (example,), dynamic_shapes=settings.dynamic_shapes())


def save_program(model: PreTrainedModel, path: str | os.PathLike[str], settings: ExportSettings) -> Path:
    """Write an ExportedProgram (`torch.export.save`, a .pt2 file) atomically; `torch.export.load` reads it."""
    program = export_program(model, settings)
    path = Path(path)
    atomic_write(path, lambda tmp: torch.export.save(program, tmp))
    return path


def metadata(model: PreTrainedModel, processor: Any | None) -> dict[str, str]:
    """What a runtime needs besides the graph: the config, the labels, the preprocessing, the class."""
    config = model.config
    labels = getattr(config, "id2label", None) or {}
    values = {
        CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        CLASS_KEY: type(model).__name__,
        LABELS_KEY: json.dumps({str(k): v for k, v in labels.items()}),
    }
    if processor is not None:
        values[PREPROCESSING_KEY] = json.dumps(processor.to_dict(), sort_keys=True)
    return values


def save_onnx(
    model: PreTrainedModel,
    path: str | os.PathLike[str],
    settings: ExportSettings,
    processor: Any | None = None,
    verify: bool = True,
) -> Path:
    """Write an ONNX file of `model` (with its labels and preprocessing as metadata) atomically, and, with
    `verify`, check it in onnxruntime against PyTorch at batch 1 and 4 (1 and `batch_size` when the batch
    is fixed).

    Raises:
        ExportError: onnxruntime's outputs differ from PyTorch's by more than `TOLERANCE`.
    """
    import onnx
    import onnxscript.optimizer

    program = export_program(model, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            opset_version=settings.opset,
            input_names=[INPUT_NAME],
            output_names=output_names(model),
            optimize=False,
            verbose=False,
        )
    assert onnx_program is not None
    proto = onnxscript.optimizer.optimize(
        onnx_program.model_proto, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT
    )
    for key, value in metadata(model, processor).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    if verify:
        batches = (1, 4) if settings.dynamic_batch else (settings.batch_size,)
        difference = verify_onnx(path, model, settings, batches)
        if difference > TOLERANCE:
            path.unlink()
            raise ExportError(
                f"the ONNX graph's outputs differ from PyTorch's by {difference:.3g} (more than {TOLERANCE}); "
                "nothing was written"
            )
    return path


def verify_onnx(
    path: str | os.PathLike[str], model: PreTrainedModel, settings: ExportSettings, batches: Sequence[int] = (1, 4)
) -> float:
    """The largest absolute difference between onnxruntime's outputs of `path` and the model's, over
    random inputs of each batch size in `batches` at the export size."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapped = _NamedOutputs(model.eval())
    worst = 0.0
    for batch in batches:
        pixels = torch.rand(batch, model.config.num_channels, *settings.image_size)
        with torch.no_grad():
            expected = wrapped(pixels)
        got = session.run(None, {INPUT_NAME: pixels.numpy()})
        for e, g in zip(expected, got, strict=True):
            worst = max(worst, float((e - torch.from_numpy(g)).abs().max()))
    return worst

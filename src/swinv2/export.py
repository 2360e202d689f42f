"""Export: ONNX files that onnxruntime runs, and `torch.export` programs, for every model of the library.

Both go through `torch.export` on the "graph" backend (`swinv2.backends.graph`) with plain PyTorch ops
(`swinv2.backends.plain`): the CPU fast paths (packed weights, hand-written autograd nodes) step aside for
a layout a graph runtime runs well (one q/k/v product per block, window moves as one gather by a
precomputed index, linears as Gemm with their bias, GELU as one operator), and the cached attention terms
(position bias with the shift mask) are computed inside the traced call, so the exporter folds them into
one constant per block rather than tracing tensors at one batch size. The ONNX file is written by
PyTorch's dynamo-based exporter (the legacy TorchScript exporter bakes shapes into such a graph and gives
wrong results at other batch sizes), then folded by onnxscript's optimizer; reduced precisions (fp16,
dynamic int8) come from onnxruntime's own converters and are checked against PyTorch to a stated
relative tolerance.

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
DEFAULT_OPSET = 20  # the first with a Gelu operator (one node instead of the Erf formula)
# Constant folding folds subgraphs whose inputs and outputs have at most this many elements: the position
# bias with its shift mask (nW*nH*N*N, about 0.8 M at 256 px) and the stacked q/k/v weights (3C*C) of
# every block become constants; the onnxscript optimizer's defaults (8192 and 262144) leave them computed
# at every call.
FOLD_LIMIT = 1 << 24
#: The largest difference to PyTorch's output that `verify_onnx` accepts (fp32).
TOLERANCE = 1e-4
#: ONNX weight precisions: "fp32" (exact), "fp16" (weights and arithmetic in half precision, fp32 input and
#: outputs; for GPU runtimes), "int8" (onnxruntime's dynamic quantisation: int8 weights of every MatMul
#: and Gemm, activations quantised per call; for CPUs). bf16 is not offered: onnxruntime has bf16 kernels
#: for few of the graph's operators.
PRECISIONS = ("fp32", "fp16", "int8")
#: The largest difference a reduced precision may make, relative to the largest PyTorch output (fp32).
RELATIVE_TOLERANCE = {"fp16": 1e-2, "int8": 1e-1}


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
    precision: str = "fp32"

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
    precision: str = "fp32",
) -> ExportSettings:
    """Settings for `model`, checked: sizes positive, the opset one the exporter writes, a known precision."""
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
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return ExportSettings(size, batch_size, dynamic_batch, opset, precision)


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
    proto = reduce_precision(proto, settings.precision)
    for key, value in metadata(model, processor).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    if verify:
        batches = (1, 4) if settings.dynamic_batch else (settings.batch_size,)
        difference, scale = verify_onnx(path, model, settings, batches)
        allowed = TOLERANCE if settings.precision == "fp32" else RELATIVE_TOLERANCE[settings.precision] * scale
        if difference > allowed:
            path.unlink()
            raise ExportError(
                f"the {settings.precision} ONNX graph's outputs differ from PyTorch's by {difference:.3g} (more "
                f"than {allowed:.3g}); nothing was written"
            )
    return path


def reduce_precision(proto: Any, precision: str) -> Any:
    """The fp32 ONNX model `proto` at `precision` (see `PRECISIONS`), by onnxruntime's own converters."""
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(proto, keep_io_types=True)
    if precision == "int8":
        import tempfile

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as scratch:
            source, target = Path(scratch, "fp32.onnx"), Path(scratch, "int8.onnx")
            onnx.save_model(proto, str(source))
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            return onnx.load_model(str(target))
    return proto


def verify_onnx(
    path: str | os.PathLike[str], model: PreTrainedModel, settings: ExportSettings, batches: Sequence[int] = (1, 4)
) -> tuple[float, float]:
    """The largest absolute difference between onnxruntime's outputs of `path` and the model's, over
    random inputs of each batch size in `batches` at the export size, and the largest absolute output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapped = _NamedOutputs(model.eval())
    worst = scale = 0.0
    for batch in batches:
        pixels = torch.rand(batch, model.config.num_channels, *settings.image_size)
        with torch.no_grad():
            expected = wrapped(pixels)
        got = session.run(None, {INPUT_NAME: pixels.numpy()})
        for e, g in zip(expected, got, strict=True):
            worst = max(worst, float((e - torch.from_numpy(g)).abs().max()))
            scale = max(scale, float(e.abs().max()))
    return worst, scale

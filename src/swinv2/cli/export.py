"""`swinv2 export`: a model directory to an ONNX file (checked in onnxruntime) or a torch.export program."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from swinv2.cli.common import CommandError, positive_int

# swinv2.export's DEFAULT_OPSET and PRECISIONS, repeated so that building the parser imports no torch
# (tests/unit/cli holds them equal)
DEFAULT_OPSET = 20
PRECISIONS = ("fp32", "fp16", "int8")


def _load(reference: str) -> tuple[Any, Any]:
    """The model of a directory (Swin V2 of any class, or Swin2SR) and its saved processor (or None)."""
    from swinv2.config import CONFIG_NAME
    from swinv2.io.jsonfile import read_json_object
    from swinv2.loading import load_checkpoint
    from swinv2.models import Swin2SRForImageSuperResolution
    from swinv2.preprocess import PREPROCESSOR_NAME, Swinv2ImageProcessor
    from swinv2.superres import Swin2SRImageProcessor

    path = Path(reference)
    if not (path / CONFIG_NAME).is_file():
        raise CommandError(f"'{path}' is not a model directory (no {CONFIG_NAME}); convert a checkpoint first")
    kind = read_json_object(path / CONFIG_NAME, CONFIG_NAME).get("model_type")
    processor: Any = None
    if kind == "swin2sr":
        model: Any = Swin2SRForImageSuperResolution.from_pretrained(path)
        if (path / PREPROCESSOR_NAME).is_file():
            processor = Swin2SRImageProcessor.from_pretrained(path)
    else:
        model = load_checkpoint(path)
        if (path / PREPROCESSOR_NAME).is_file():
            processor = Swinv2ImageProcessor.from_pretrained(path)
    return model.eval(), processor


def export_command(args: argparse.Namespace) -> str:
    """Export, verify (ONNX: onnxruntime against PyTorch at the export size) and say what was written."""
    from swinv2.export import ExportError, save_onnx, save_program, settings_for

    if args.dynamic_size:
        raise CommandError(
            "--dynamic-size is not supported: the window arithmetic (padding to whole windows, the shift masks) is "
            "resolved at the export size; export once per --image-size"
        )
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CommandError(f"'{out}' exists; pass --overwrite to replace it")
    model, processor = _load(args.model)
    try:
        settings = settings_for(
            model,
            args.image_size,
            batch_size=args.batch_size,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            precision=args.precision,
        )
    except ExportError as err:
        raise CommandError(str(err)) from None
    started = time.perf_counter()
    if args.format == "onnx":
        save_onnx(model, out, settings, processor=processor)
    else:
        save_program(model, out, settings)
    batch = "dynamic batch" if settings.dynamic_batch else f"batch {settings.batch_size}"
    height, width = settings.image_size
    checked = "; checked in onnxruntime at batch 1 and 4" if args.format == "onnx" and settings.dynamic_batch else ""
    if args.format == "onnx" and not settings.dynamic_batch:
        checked = f"; checked in onnxruntime at batch {settings.batch_size}"
    precision = f", {settings.precision}" if args.format == "onnx" else ""
    return (
        f"wrote {args.format} '{out}' ({type(model).__name__}, {height} x {width}, {batch}{precision}) "
        f"in {time.perf_counter() - started:.1f} s{checked}"
    )


def register(commands: Any) -> None:
    """Add `export` to the `swinv2` subcommands."""
    sub = commands.add_parser(
        "export",
        help="export a model directory to ONNX (checked in onnxruntime) or a torch.export program",
        description=(
            "Export MODEL (a model directory: classifier, encoder, backbone, SimMIM or Swin2SR) for deployment. "
            "ONNX files are checked in onnxruntime against PyTorch before they are kept, and carry the labels "
            "and preprocessing (`swinv2 classify --onnx FILE` runs them without the model code). Only the batch "
            "can be dynamic; height and width are fixed at --image-size (default: the model's)."
        ),
    )
    sub.add_argument("model", metavar="MODEL", help="model directory")
    sub.add_argument("--format", choices=("onnx", "exported-program"), default="onnx")
    sub.add_argument("--out", required=True, metavar="FILE", help=".onnx, or .pt2 for an exported program")
    sub.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset (17 to 23; default {DEFAULT_OPSET})",
    )
    sub.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="ONNX weights: fp32 (default), fp16 (GPU runtimes) or int8 (dynamic quantisation, for CPUs)",
    )
    sub.add_argument("--dynamic-batch", action="store_true", help="leave the batch size free in the graph")
    sub.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="the fixed batch (default 1)")
    sub.add_argument("--image-size", type=positive_int, nargs=2, metavar=("H", "W"), help="default: the model's")
    sub.add_argument("--dynamic-size", action="store_true", help=argparse.SUPPRESS)
    sub.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    sub.set_defaults(run=export_command)

"""`swinv2 convert`: any checkpoint layout to a transformers directory or a timm file, verified before
it is moved into place. A transformers directory is written pipeline-ready: config.json,
model.safetensors and preprocessor_config.json."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch

from swinv2.cli.common import CommandError, variant_name
from swinv2.config import Swinv2Config
from swinv2.io.checkpoints import read_state_dict
from swinv2.io.files import DestinationExistsError, recover, staged_output
from swinv2.io.keymaps import TIMM, to_transformers
from swinv2.loading import load_checkpoint, save_timm
from swinv2.models import Swinv2ForImageClassification, Swinv2PreTrainedModel
from swinv2.pipeline import default_processor
from swinv2.preprocess import PREPROCESSOR_NAME, Swinv2ImageProcessor

VERIFY_ATOL = 1e-5


def _outputs(model: Swinv2PreTrainedModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's main output, flattened: logits, reconstruction, last_hidden_state or all feature maps."""
    with torch.no_grad():
        first = model(pixel_values)[0]
    maps = first if isinstance(first, tuple) else (first,)
    return torch.cat([m.flatten() for m in maps])


def _reload(path: Path, target: str, source_model: Swinv2PreTrainedModel) -> Swinv2PreTrainedModel:
    if target == "hf":
        return load_checkpoint(path)
    reloaded = Swinv2ForImageClassification(source_model.config)
    converted = to_transformers(read_state_dict(path), TIMM)
    reloaded.load_hf_state_dict(converted.tensors, source=str(path), unexpected=converted.unmatched)
    return reloaded.eval()


def _write_preprocessing(source: Path, variant: str | None, model: Swinv2PreTrainedModel, directory: Path) -> None:
    """Make `directory` pipeline-ready: the source directory's own preprocessor_config.json (as it is), else
    the named variant's preprocessing, else resizing to the model's image size with ImageNet statistics."""
    own = source / PREPROCESSOR_NAME
    if source.is_dir() and own.is_file():
        shutil.copyfile(own, directory / PREPROCESSOR_NAME)
    elif variant is not None:
        Swinv2ImageProcessor.from_variant(variant).save_pretrained(directory)
    else:
        default_processor(model).save_pretrained(directory)


def _write_verified(
    model: Swinv2PreTrainedModel, source: Path, destination: Path, staged: Path, args: argparse.Namespace
) -> torch.Tensor:
    """Write `model` to `staged` in the `--to` format and check that reloading it reproduces `model`'s
    outputs; returns the largest difference. Raises `CommandError` (so nothing is published) if not."""
    if args.to == "hf":
        model.save_pretrained(staged)
        _write_preprocessing(source, args.variant, model, staged)
    else:
        save_timm(model, staged)  # raises for models other than classifiers
    height, width = model.config.image_hw
    pixel_values = torch.randn(1, model.config.num_channels, height, width, generator=torch.Generator().manual_seed(0))
    difference = (_outputs(_reload(staged, args.to, model), pixel_values) - _outputs(model, pixel_values)).abs().max()
    if not difference <= VERIFY_ATOL:
        raise CommandError(f"'{destination}' would not reproduce '{source}' (max abs difference {difference:.3g})")
    return difference


def convert(args: argparse.Namespace) -> str:
    """Convert SRC to DST, verify the written checkpoint reproduces SRC's outputs, then move it in place.

    The output is staged beside DST and published by `staged_output`: a killed conversion leaves DST as it
    was (or absent) and its staging for the next run to remove; `--overwrite` keeps the old DST until the
    new one is in place."""
    source, destination = Path(args.src), Path(args.dst)
    if not source.exists():
        raise CommandError(f"no such file or directory: '{source}'")
    recover(destination)  # an interrupted earlier run's leftovers, before deciding whether DST exists
    if destination.exists() and not args.overwrite:
        raise CommandError(f"'{destination}' exists; pass --overwrite to replace it")
    config = Swinv2Config.from_json_file(args.config) if args.config else None
    model = load_checkpoint(source, variant=args.variant, config=config)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged_output(destination, overwrite=args.overwrite) as staged:
            difference = _write_verified(model, source, destination, staged, args)
    except DestinationExistsError:  # appeared while converting
        raise CommandError(f"'{destination}' exists; pass --overwrite to replace it") from None
    kind = "a transformers directory" if args.to == "hf" else "a timm state dict"
    return (
        f"converted '{source}' -> '{destination}' ({kind}, {type(model).__name__}, "
        f"{model.num_parameters() / 1e6:.2f} M parameters); outputs match (max abs difference {difference:.1g})"
    )


def register(commands: Any) -> None:
    """Add `convert` to the `swinv2` subcommands."""
    conv = commands.add_parser(
        "convert",
        help="convert a checkpoint (transformers, timm, Microsoft) to a transformers directory or timm file",
        description=(
            "Read SRC in any supported layout (a transformers directory, a timm state dict, an official "
            "Microsoft .pth, a SimMIM pre-training checkpoint), write DST, and check that DST reproduces "
            "SRC's outputs before moving it into place. timm and Microsoft files carry no config: give "
            "--variant or --config. A transformers directory gets a preprocessor_config.json too (SRC's own, "
            "else the variant's preprocessing, else the model's image size with ImageNet statistics), so "
            "transformers.pipeline loads it as it is."
        ),
    )
    conv.add_argument("src", metavar="SRC", help="checkpoint file or transformers directory")
    conv.add_argument("dst", metavar="DST", help="output directory (--to hf) or file (--to timm)")
    which = conv.add_mutually_exclusive_group()
    which.add_argument(
        "--variant", type=variant_name, metavar="NAME", help="named variant of SRC's shapes (ours or timm's name)"
    )
    which.add_argument("--config", metavar="FILE", help="config.json describing SRC")
    conv.add_argument("--to", choices=("hf", "timm"), default="hf", help="output format (default: hf)")
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    conv.set_defaults(run=convert)

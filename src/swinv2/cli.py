"""`swinv2` command line: thin subcommands over the library.

Exit codes: 0 success, 1 failure (one line on stderr naming the file and the problem), 2 misuse.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from swinv2.checkpoints import CheckpointError, load_into_model, read_state_dict
from swinv2.config import Swinv2Config
from swinv2.convert import from_timm
from swinv2.formats import load_checkpoint, save_timm
from swinv2.models import Swinv2ForImageClassification, Swinv2PreTrainedModel
from swinv2.zoo import get_variant

VERIFY_ATOL = 1e-5


class CommandError(Exception):
    """A failure to report as one line and exit status 1."""


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
    load_into_model(reloaded, from_timm(read_state_dict(path)), source=str(path))
    return reloaded.eval()


def _place(staged: Path, destination: Path, overwrite: bool) -> None:
    """Move the verified `staged` output to `destination`; an old destination goes only after that."""
    if not destination.exists():
        staged.rename(destination)
        return
    if not overwrite:
        raise CommandError(f"'{destination}' exists; pass --overwrite to replace it")
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", dir=destination.parent)) / destination.name
    destination.rename(retired)
    staged.rename(destination)
    shutil.rmtree(retired.parent)


def convert(args: argparse.Namespace) -> str:
    """Convert SRC to DST, verify the written checkpoint reproduces SRC's outputs, then move it in place."""
    source, destination = Path(args.src), Path(args.dst)
    if not source.exists():
        raise CommandError(f"no such file or directory: '{source}'")
    if destination.exists() and not args.overwrite:
        raise CommandError(f"'{destination}' exists; pass --overwrite to replace it")
    config = Swinv2Config.from_json_file(args.config) if args.config else None
    model = load_checkpoint(source, variant=args.variant, config=config)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        staged = staging / destination.name
        if args.to == "hf":
            model.save_pretrained(staged)
        else:
            save_timm(model, staged)  # type: ignore[arg-type]
        height, width = model.config.image_hw
        pixel_values = torch.randn(
            1, model.config.num_channels, height, width, generator=torch.Generator().manual_seed(0)
        )
        difference = (
            (_outputs(_reload(staged, args.to, model), pixel_values) - _outputs(model, pixel_values)).abs().max()
        )
        if not difference <= VERIFY_ATOL:
            raise CommandError(f"'{destination}' would not reproduce '{source}' (max abs difference {difference:.3g})")
        _place(staged, destination, args.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kind = "a transformers directory" if args.to == "hf" else "a timm state dict"
    return (
        f"converted '{source}' -> '{destination}' ({kind}, {type(model).__name__}, "
        f"{model.num_parameters() / 1e6:.2f} M parameters); outputs match (max abs difference {difference:.1g})"
    )


def bench(args: argparse.Namespace) -> str:
    """Run the CPU benchmark against the installed peers; print (and optionally save) the table."""
    from swinv2.bench import run, to_markdown, write_report

    report = run(args.variant, rounds=args.rounds, threads=args.threads)
    if args.out:
        json_path, md_path = write_report(report, args.out, "cpu")
        return to_markdown(report) + f"\nwrote {json_path} and {md_path}"
    return to_markdown(report)


def _variant_name(name: str) -> str:
    try:
        return get_variant(name).name
    except KeyError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None


def build_parser() -> argparse.ArgumentParser:
    """The `swinv2` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = commands.add_parser(
        "convert",
        help="convert a checkpoint (transformers, timm, Microsoft) to a transformers directory or timm file",
        description=(
            "Read SRC in any supported layout (a transformers directory, a timm state dict, an official "
            "Microsoft .pth, a SimMIM pre-training checkpoint), write DST, and check that DST reproduces "
            "SRC's outputs before moving it into place. timm and Microsoft files carry no config: give "
            "--variant or --config."
        ),
    )
    conv.add_argument("src", metavar="SRC", help="checkpoint file or transformers directory")
    conv.add_argument("dst", metavar="DST", help="output directory (--to hf) or file (--to timm)")
    which = conv.add_mutually_exclusive_group()
    which.add_argument(
        "--variant", type=_variant_name, metavar="NAME", help="named variant of SRC's shapes (ours or timm's name)"
    )
    which.add_argument("--config", metavar="FILE", help="config.json describing SRC")
    conv.add_argument("--to", choices=("hf", "timm"), default="hf", help="output format (default: hf)")
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    conv.set_defaults(run=convert)

    speed = commands.add_parser(
        "bench",
        help="measure speed and memory against transformers and timm (CPU)",
        description="Side-by-side CPU benchmark on the same weights: inference at batch 1 and 8 "
        "(fp32, bf16 autocast) and a training step at batch 8, interleaved rounds.",
    )
    speed.add_argument("--variant", type=_variant_name, default="swinv2-tiny-patch4-window8-256", metavar="NAME")
    speed.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default: 5)")
    speed.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    speed.add_argument("--out", metavar="DIR", help="also write cpu.json and cpu.md into DIR")
    speed.set_defaults(run=bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        message = args.run(args)
    except CheckpointError as err:
        text = str(err) if err.report is None else err.report.describe(err.subject, limit=3)
        print(f"swinv2 {args.command}: error: {text}", file=sys.stderr)
        return 1
    except (CommandError, OSError, ValueError) as err:
        print(f"swinv2 {args.command}: error: {err}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())

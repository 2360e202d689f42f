"""`swinv2` command line: thin subcommands over the library.

Exit codes: 0 success, 1 failure (one line on stderr naming the file and the problem), 2 misuse.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from swinv2.config import Swinv2Config
from swinv2.convert import from_timm
from swinv2.formats import load_checkpoint, save_timm
from swinv2.io.checkpoints import CheckpointError, load_into_model, read_state_dict
from swinv2.models import Swinv2ForImageClassification, Swinv2PreTrainedModel
from swinv2.zoo import get_variant

VERIFY_ATOL = 1e-5


class CommandError(Exception):
    """A failure to report as one line and exit status 1 (`reported`: the details are already on stderr)."""

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


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
    """Run the benchmark against the installed peers; print (and optionally save) the table."""
    from swinv2.cli.bench import run, to_markdown, write_report

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device}: no CUDA device here")
    report = run(args.variant, rounds=args.rounds, device=args.device, threads=args.threads)
    if args.out:
        json_path, md_path = write_report(report, args.out, args.device.split(":")[0])
        return to_markdown(report) + f"\nwrote {json_path} and {md_path}"
    return to_markdown(report)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_paths(arguments: Sequence[str]) -> list[Path]:
    """Files as given, directories searched recursively for image files, globs expanded; sorted, unique."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in argument for ch in "*?["):
            matches = sorted(Path().glob(argument) if not path.is_absolute() else Path("/").glob(argument[1:]))
            if not matches:
                raise CommandError(f"no files match '{argument}'")
            found += [m for m in matches if m.is_file()]
        else:
            found.append(path)  # missing files are reported one by one later
    return list(dict.fromkeys(found))


def _progress(done: int, total: int) -> None:
    if total >= 20 and sys.stderr.isatty():
        filled = 30 * done // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _readable_images(paths: Sequence[Path], failures: list[str], command: str) -> list[tuple[Path, Any]]:
    from swinv2.preprocess import ImageError, open_image

    good = []
    for path in paths:
        try:
            good.append((path, open_image(path)))
        except ImageError as err:
            failures.append(str(err))
            print(f"swinv2 {command}: error: {err}", file=sys.stderr)
    return good


def classify_command(args: argparse.Namespace) -> str:
    """Classify files, directories and globs; bad files are reported and skipped (exit 1 if any)."""
    from swinv2.pipeline import classify, load_model

    paths = expand_paths(args.paths)
    model, processor = load_model(args.model, random_weights=args.random_weights, device=args.device)
    failures: list[str] = []
    lines: list[str] = []
    for start in range(0, len(paths), args.batch_size):
        good = _readable_images(paths[start : start + args.batch_size], failures, "classify")
        if good:
            images = [image for _, image in good]
            results = classify(images, model, top_k=args.top_k, batch_size=args.batch_size, processor=processor)
            for (path, _), predictions in zip(good, results, strict=True):
                if args.json:
                    print(json.dumps({"path": str(path), "predictions": predictions}))
                else:
                    lines.append(f"{path}: " + ", ".join(f"{p['label']} {p['score']:.3f}" for p in predictions))
        _progress(min(start + args.batch_size, len(paths)), len(paths))
    if lines:
        print("\n".join(lines))
    if failures:
        raise CommandError(f"{len(failures)} of {len(paths)} images could not be read", reported=True)
    return ""


def features_command(args: argparse.Namespace) -> str:
    """Write pooled (and per-stage) features of the readable images to a .safetensors or .npy file."""
    from safetensors.torch import save_file

    from swinv2.io.files import atomic_write
    from swinv2.pipeline import extract_features, load_model

    out = Path(args.out)
    if out.suffix not in (".safetensors", ".npy"):
        raise CommandError(f"--out must end in .safetensors or .npy; got '{out}'")
    stages = [s for s in (args.stages or "").split(",") if s]
    if out.suffix == ".npy" and stages:
        raise CommandError("per-stage features need a .safetensors file (.npy holds one array)")
    paths = expand_paths(args.paths)
    failures: list[str] = []
    good = _readable_images(paths, failures, "features")
    if good:
        model, processor = load_model(args.model, random_weights=args.random_weights, device=args.device)
        images = [image for _, image in good]
        features = extract_features(images, model, stages=stages, batch_size=args.batch_size, processor=processor)
        if out.suffix == ".npy":
            import numpy as np

            atomic_write(out, lambda tmp: np.save(tmp.open("wb"), features["pooled"].numpy()))
        else:
            metadata = {"paths": json.dumps([str(p) for p, _ in good])}
            tensors = {k: v.contiguous() for k, v in features.items()}
            atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    if failures:
        raise CommandError(f"{len(failures)} of {len(paths)} images could not be read", reported=True)
    return f"wrote features of {len(good)} images to '{out}'"


def info_command(args: argparse.Namespace) -> str:
    """The model's config, parameter count, FLOPs at its input size and labels."""
    from swinv2.cli.bench import count_flops
    from swinv2.pipeline import load_model

    model, processor = load_model(args.model, random_weights=args.random_weights)
    height, width = model.config.image_hw
    flops = count_flops(model, torch.zeros(1, model.config.num_channels, height, width))
    labels = model.config.id2label or {}
    shown = ", ".join(f"{i}: {labels[i]}" for i in list(labels)[:10]) + (" ..." if len(labels) > 10 else "")
    return "\n".join(
        [
            f"{type(model).__name__}: {model.num_parameters() / 1e6:.2f} M parameters, "
            f"{flops / 1e9:.2f} GFLOP per {height}x{width} image",
            f"input: {processor.size['height']}x{processor.size['width']}, mean {processor.image_mean}, "
            f"std {processor.image_std}",
            f"labels ({len(labels)}): {shown}",
            "config:",
            model.config.to_json_string().rstrip(),
        ]
    )


def demo_command(args: argparse.Namespace) -> str:
    """Train on scikit-learn's digits, save, classify the held-out set, report and draw."""
    from swinv2.cli.demo import format_confusion, run_demo

    result = run_demo(Path(args.out), epochs=args.epochs, seed=args.seed)
    return "\n".join(
        [
            f"held-out accuracy: {result.accuracy:.2%} in {result.seconds:.0f} s",
            format_confusion(result.confusion),
            f"model (transformers format): {result.model_dir}",
            f"predictions sheet: {result.sheet}",
            f"training curves: {result.curves}",
            f"try: swinv2 classify SOME_IMAGE --model {result.model_dir}",
        ]
    )


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
        help="measure speed and memory against transformers and timm",
        description="Side-by-side benchmark on the same weights, interleaved rounds. CPU: inference at "
        "batch 1 and 8 (fp32, bf16 autocast) and a training step at batch 8. CUDA: bf16 inference at "
        "batch 256, eager and compiled, and a training step at batch 128.",
    )
    speed.add_argument("--variant", type=_variant_name, default="swinv2-tiny-patch4-window8-256", metavar="NAME")
    speed.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default: 5)")
    speed.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    speed.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    speed.add_argument("--out", metavar="DIR", help="also write <device>.json and <device>.md into DIR")
    speed.set_defaults(run=bench)

    def add_model_arguments(sub: argparse.ArgumentParser, required: bool = True) -> None:
        sub.add_argument("--model", required=required, metavar="M", help="model directory, Hub id or variant name")
        sub.add_argument("--random-weights", action="store_true", help="allow a variant name (random weights)")

    cls = commands.add_parser("classify", help="classify images (files, directories, globs)")
    cls.add_argument("paths", nargs="+", metavar="PATH")
    add_model_arguments(cls)
    cls.add_argument("--top-k", type=int, default=5, metavar="K")
    cls.add_argument("--batch-size", type=int, default=8, metavar="N")
    cls.add_argument("--device", default=None, metavar="D", help="cpu, cuda, cuda:1 ... (default: cpu)")
    cls.add_argument("--json", action="store_true", help="one JSON object per image and line")
    cls.set_defaults(run=classify_command)

    feats = commands.add_parser("features", help="extract pooled or per-stage features")
    feats.add_argument("paths", nargs="+", metavar="PATH")
    add_model_arguments(feats)
    feats.add_argument("--out", required=True, metavar="FILE", help=".safetensors or .npy")
    feats.add_argument("--stages", metavar="LIST", help="comma-separated stage names (stem,stage1,...)")
    feats.add_argument("--batch-size", type=int, default=8, metavar="N")
    feats.add_argument("--device", default=None, metavar="D")
    feats.set_defaults(run=features_command)

    about = commands.add_parser("info", help="config, parameter count, FLOPs and labels of a model")
    about.add_argument("model", metavar="MODEL", help="model directory, Hub id or variant name")
    about.add_argument("--random-weights", action="store_true", help="allow a variant name (random weights)")
    about.set_defaults(run=info_command)

    demo = commands.add_parser("demo", help="train a small Swin V2 on scikit-learn's digits, offline")
    demo.add_argument("--out", default="swinv2-demo", metavar="DIR", help="where to write (default: swinv2-demo)")
    demo.add_argument("--epochs", type=int, default=40, metavar="N")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=demo_command)
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
    except CommandError as err:
        if not err.reported:
            print(f"swinv2 {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"swinv2 {args.command}: error: {err}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0


"""`swinv2 classify` and `swinv2 features`: images (files, directories, globs) through a model."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swinv2.cli.common import CommandError, add_model_arguments, positive_int

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


def _progress(total: int) -> Any:
    """A tqdm bar over `total` images on stderr; disabled (silent) off a terminal or under 20 images."""
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, disable=total < 20 or not sys.stderr.isatty())


def strict_json(record: dict[str, Any]) -> str:
    """One line of strict JSON: non-finite numbers (from non-finite weights, say) become null, and a
    "warnings" field names where, so every JSON reader can parse the line."""
    from swinv2.io.jsonfile import json_safe

    safe, replaced = json_safe(record)
    if replaced:
        safe["warnings"] = [f"non-finite value replaced by null at {where}" for where in replaced]
    return json.dumps(safe, allow_nan=False)


def _readable_images(paths: Sequence[Path], failures: list[str], command: str) -> list[tuple[Path, Any]]:
    from swinv2.io.errors import InputError
    from swinv2.preprocess import open_image

    good = []
    for path in paths:
        try:
            good.append((path, open_image(path)))
        except InputError as err:
            failures.append(str(err))
            print(f"swinv2 {command}: error: {err}", file=sys.stderr)
    return good


def classify_command(args: argparse.Namespace) -> str:
    """Classify files, directories and globs; bad files are reported and skipped (exit 1 if any)."""
    from swinv2.pipeline import classify, load_model

    paths = expand_paths(args.paths)
    if args.onnx is not None:  # onnxruntime and the file's own labels and preprocessing; no model code
        from swinv2.runtime import OnnxClassifier

        runner: Any = OnnxClassifier(args.onnx)
        model: Any = None
        processor: Any = None
    else:
        model, processor = load_model(args.model, random_weights=args.random_weights, device=args.device)
    failures: list[str] = []
    lines: list[str] = []
    with _progress(len(paths)) as bar:
        for start in range(0, len(paths), args.batch_size):
            good = _readable_images(paths[start : start + args.batch_size], failures, "classify")
            if good:
                images = [image for _, image in good]
                if args.onnx is not None:
                    results = runner(images, top_k=args.top_k, batch_size=args.batch_size)
                else:
                    results = classify(images, model, top_k=args.top_k, batch_size=args.batch_size, processor=processor)
                for (path, _), predictions in zip(good, results, strict=True):
                    if args.json:
                        print(strict_json({"path": str(path), "predictions": predictions}))
                    else:
                        lines.append(f"{path}: " + ", ".join(f"{p['label']} {p['score']:.3f}" for p in predictions))
            bar.update(min(args.batch_size, len(paths) - start))
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


def register(commands: Any) -> None:
    """Add `classify` and `features` to the `swinv2` subcommands."""
    cls = commands.add_parser("classify", help="classify images (files, directories, globs)")
    cls.add_argument("paths", nargs="+", metavar="PATH")
    source = cls.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="M", help="model directory, Hub id or variant name")
    source.add_argument("--onnx", metavar="FILE", help="an ONNX file from `swinv2 export`, run with onnxruntime")
    cls.add_argument("--random-weights", action="store_true", help="allow a variant name (random weights)")
    cls.add_argument("--top-k", type=positive_int, default=5, metavar="K")
    cls.add_argument("--batch-size", type=positive_int, default=8, metavar="N")
    cls.add_argument("--device", default=None, metavar="D", help="cpu, cuda, cuda:1 ... (default: cpu)")
    cls.add_argument("--json", action="store_true", help="one JSON object per image and line")
    cls.set_defaults(run=classify_command)

    feats = commands.add_parser("features", help="extract pooled or per-stage features")
    feats.add_argument("paths", nargs="+", metavar="PATH")
    add_model_arguments(feats)
    feats.add_argument("--out", required=True, metavar="FILE", help=".safetensors or .npy")
    feats.add_argument("--stages", metavar="LIST", help="comma-separated stage names (stem,stage1,...)")
    feats.add_argument("--batch-size", type=positive_int, default=8, metavar="N")
    feats.add_argument("--device", default=None, metavar="D")
    feats.set_defaults(run=features_command)

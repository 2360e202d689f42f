"""`swinv2 upscale`: super-resolve image files with a Swin2SR model, whole or tile by tile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from swinv2.cli.common import CommandError, non_negative_int, positive_int
from swinv2.cli.use import expand_paths

#: Output formats by input suffix: the same format where it can hold the result, else PNG.
KEPT_SUFFIXES = (".png", ".tif", ".tiff", ".webp", ".bmp", ".jpg", ".jpeg")


def output_path(source: Path, out: Path) -> Path:
    """Where the result of `source` goes in `out`: the same name; formats Pillow writes badly become PNG."""
    suffix = source.suffix.lower() if source.suffix.lower() in KEPT_SUFFIXES else ".png"
    return out / (source.stem + suffix)


def _save(image: Any, target: Path) -> None:
    from swinv2.io.files import atomic_write

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(target.suffix.lower())
    options = {"quality": 95} if fmt == "JPEG" else {}
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):  # JPEG holds no alpha or 16 bits: PNG beside it
        target = target.with_suffix(".png")
        fmt = None
    atomic_write(target, lambda tmp: image.save(tmp, format=fmt or target.suffix.lstrip(".").upper(), **options))


def upscale_command(args: argparse.Namespace) -> str:
    """Upscale every readable image into --out; bad files are reported one per line (exit 1 if any)."""
    from tqdm import tqdm

    from swinv2.io.errors import InputError
    from swinv2.pipeline import load_sr_model, upscale
    from swinv2.preprocess import open_image
    from swinv2.superres import Tiling

    if args.tile is not None and args.overlap >= args.tile:
        raise CommandError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    paths = expand_paths(args.paths)
    out = Path(args.out)
    targets: dict[Path, Path] = {}
    for path in paths:
        target = output_path(path, out)
        if target in targets.values():
            other = next(p for p, t in targets.items() if t == target)
            raise CommandError(f"'{path}' and '{other}' would both be written to '{target}'; upscale them apart")
        targets[path] = target
    model = load_sr_model(args.model, device=args.device)
    if args.tile is not None:  # whole windows: an overlap below the tile can still round up to it
        try:
            Tiling(args.tile, args.overlap).aligned(model.config.window_size)
        except ValueError as err:
            raise CommandError(f"--tile {args.tile} --overlap {args.overlap}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    terminal = sys.stderr.isatty()
    files = tqdm(total=len(paths), unit="image", file=sys.stderr, disable=not terminal or len(paths) < 2)
    tiles = tqdm(unit="tile", file=sys.stderr, leave=False, disable=not terminal or args.tile is None)

    def on_tile(done: int, total: int) -> None:
        tiles.total = total
        tiles.n = done
        tiles.refresh()

    written = 0
    with files, tiles:
        for path in paths:
            try:
                image = open_image(path)
                result = upscale(
                    [image], model, tile=args.tile, overlap=args.overlap, dtype=args.dtype, on_tile=on_tile
                )[0]
                _save(result, targets[path])
                written += 1
            except InputError as err:
                failures.append(str(err))
                tqdm.write(f"swinv2 upscale: error: {err}", file=sys.stderr)
            files.update(1)
    if failures:
        raise CommandError(f"{len(failures)} of {len(paths)} images could not be upscaled", reported=True)
    return f"wrote {written} image(s) to '{out}'"


def register(commands: Any) -> None:
    """Add `upscale` to the `swinv2` subcommands."""
    sub = commands.add_parser(
        "upscale",
        help="super-resolve images with a Swin2SR model (tiled for large images)",
        description=(
            "Upscale image files, directories or globs with a Swin2SR model directory into DIR, under the same "
            "names (PNG where the input format cannot hold the result). Alpha is upscaled apart and kept; "
            "16-bit greyscale stays 16-bit. --tile runs the model tile by tile, so memory grows with the tile, "
            "not the image."
        ),
    )
    sub.add_argument("paths", nargs="+", metavar="IN")
    sub.add_argument("--model", required=True, metavar="M", help="Swin2SR model directory or Hub id")
    sub.add_argument("--out", required=True, metavar="DIR", help="output directory")
    sub.add_argument("--tile", type=positive_int, default=None, metavar="T", help="tile side in input pixels")
    sub.add_argument("--overlap", type=non_negative_int, default=32, metavar="O", help="tile overlap (default 32)")
    sub.add_argument("--device", default=None, metavar="D", help="cpu, cuda, cuda:1 ... (default: cpu)")
    sub.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="autocast dtype")
    sub.set_defaults(run=upscale_command)

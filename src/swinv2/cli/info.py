"""`swinv2 info`: what a model is (parameters, FLOPs, preprocessing, labels, config)."""

from __future__ import annotations

import argparse
from typing import Any

import torch


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


def register(commands: Any) -> None:
    """Add `info` to the `swinv2` subcommands."""
    about = commands.add_parser("info", help="config, parameter count, FLOPs and labels of a model")
    about.add_argument("model", metavar="MODEL", help="model directory, Hub id or variant name")
    about.add_argument("--random-weights", action="store_true", help="allow a variant name (random weights)")
    about.set_defaults(run=info_command)

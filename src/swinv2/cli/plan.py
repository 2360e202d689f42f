"""`swinv2 plan`: the parameters, FLOPs and memory per process of one training step, planned on fake
tensors (no weights read, nothing allocated at the model's size); see `swinv2.plan`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from swinv2.cli.common import positive_int
from swinv2.plan import PRECISIONS, Plan, plan

GIB = 2**30


def _gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"


def describe(result: Plan) -> str:
    """The plan as a small table."""
    s = result.settings
    setting = (
        f"{s.image_size} px, window {s.window_size}, batch {s.batch_size} per process, {s.precision}, "
        + (f"FSDP over {s.world_size}" if s.fsdp else "no FSDP")
        + (", activation checkpointing" if s.activation_checkpointing else "")
        + f", {s.optimizer}"
    )
    rows = [
        ("parameters", f"{result.parameters / 1e6:.2f} M"),
        ("forward FLOPs per image", f"{result.flops_per_image / 1e9:.2f} G (multiply-add = 2)"),
        ("parameters (master)", _gib(result.parameter_bytes)),
        ("gradients", _gib(result.gradient_bytes)),
        ("optimiser state", _gib(result.optimizer_bytes)),
        ("compute copies / gathered units", _gib(result.compute_parameter_bytes)),
        ("activations saved for backward", _gib(result.activation_bytes)),
        ("peak per process", _gib(result.peak_bytes)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [setting] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)


def plan_command(args: argparse.Namespace) -> str:
    """Plan, and format as a table or JSON."""
    result = plan(
        args.model,
        image_size=args.image_size,
        window_size=args.window_size,
        batch_size=args.batch_size,
        precision=args.precision,
        world_size=args.world_size,
        fsdp=args.fsdp,
        activation_checkpointing=args.activation_checkpointing,
    )
    if args.json:
        return json.dumps(result.to_dict(), indent=2)
    return describe(result)


def register(commands: Any) -> None:
    """Add `plan` to the `swinv2` subcommands."""
    sub = commands.add_parser(
        "plan",
        help="memory per process and FLOPs of a training step, planned on fake tensors",
        description=(
            "Plan one training step (forward, backward, AdamW) of MODEL's classifier: parameters, forward "
            "FLOPs per image and bytes per process (parameters, gradients, optimiser state, activations, "
            "peak), by running it on fake tensors. bf16 is FSDP's MixedPrecisionPolicy(param_dtype=bf16, "
            "reduce_dtype=fp32). Allocator caching and communication buffers are not counted: keep a margin."
        ),
    )
    sub.add_argument("model", metavar="MODEL", help="variant name or model directory (config.json)")
    sub.add_argument("--image-size", type=positive_int, metavar="N", help="square input side (default: the config's)")
    sub.add_argument("--window-size", type=positive_int, metavar="N", help="attention window (default: the config's)")
    sub.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per process (default 1)")
    sub.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32", help="fp32 (default) or bf16")
    sub.add_argument("--world-size", type=positive_int, default=1, metavar="N", help="processes (with --fsdp)")
    sub.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimiser state")
    sub.add_argument("--activation-checkpointing", action="store_true", help="recompute block activations")
    sub.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    sub.set_defaults(run=plan_command)

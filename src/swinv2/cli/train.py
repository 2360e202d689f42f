"""`swinv2 train` and `swinv2 evaluate`: fine-tuning and measuring classifiers (thin over `swinv2.train`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from swinv2.cli.common import non_negative_int, positive_int, variant_name


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number; got {value}")
    return value


def _stage_list(text: str) -> tuple[int, ...]:
    try:
        stages = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected stage indices such as 0,1; got {text!r}") from None
    if any(stage < 0 for stage in stages):
        raise argparse.ArgumentTypeError(f"expected stage indices >= 0; got {text!r}")
    return stages


def train_command(args: argparse.Namespace) -> str:
    """Train, then say where the run is and how it ended."""
    from swinv2.train.trainer import TrainConfig, train

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    config = TrainConfig(
        data=args.data,
        model=args.model,
        out=args.out,
        task=args.task,
        variant=args.variant,
        random_weights=args.random_weights,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        layer_decay=args.layer_decay,
        label_smoothing=getattr(args, "label_smoothing", 0.0),
        mixup=getattr(args, "mixup", 0.0),
        cutmix=getattr(args, "cutmix", 0.0),
        mask_ratio=getattr(args, "mask_ratio", 0.6),
        mask_patch_size=getattr(args, "mask_patch_size", None),
        crop=getattr(args, "crop", 48),
        drop_path=args.drop_path,
        grad_clip=args.grad_clip,
        accumulate=args.accumulate,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_stages=args.checkpointing_stages,
        ema=args.ema,
        image_size=args.image_size,
        window_size=args.window_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        workers=args.workers,
        device=args.device,
        fsdp=args.fsdp,
        fsdp_precision=args.fsdp_precision,
        zero=args.zero,
    )
    result = train(config)
    if not main_process:
        return ""
    lines = [f"trained {result.steps} steps; model in '{result.run / 'model'}'"]
    if result.evaluation is not None:
        lines.append(f"held-out: {result.evaluation.summary()}")
    if result.skipped_images:
        lines.append(f"skipped {len(result.skipped_images)} unreadable images:")
        lines += [f"  {path}: {reason}" for path, reason in result.skipped_images]
    return "\n".join(lines)


def evaluate_command(args: argparse.Namespace) -> str:
    """Top-1/top-5 accuracy, loss and the confusion matrix of a model on DATA's held-out images."""
    from swinv2.pipeline import load_model
    from swinv2.train.data import load_classification_data
    from swinv2.train.metrics import confusion_text, evaluate

    model, processor = load_model(args.model, device=args.device)
    data = load_classification_data(args.data, processor=processor, seed=args.seed)
    names = data.class_names
    labels = model.config.id2label or {}
    if [labels.get(i) for i in range(len(names))] != names:
        from swinv2.io.errors import InputError

        raise InputError(
            f"the model's classes {list(labels.values())[:10]} are not the data's {names[:10]} (same names, same order)"
        )
    split = data.val if args.split == "val" else data.train_eval
    result = evaluate(model, split, num_classes=len(names), batch_size=args.batch_size, device=args.device)
    if args.json:
        from swinv2.cli.use import strict_json

        return strict_json(
            {
                "split": args.split,
                "images": result.images,
                "top1": result.top1,
                "top5": result.top5,
                "loss": result.loss,
                "classes": names,
                "confusion": result.confusion,
            }
        )
    return f"{args.split}: {result.summary()}\n{confusion_text(result, names)}"


def _add_data_and_model(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("data", metavar="DATA", help="image folder (train/<class>/*, val/<class>/*) or 'digits'")


def _add_run_options(sub: argparse.ArgumentParser) -> None:
    """The options `train` and `pretrain` share: data, model, length, recipe, checkpoints, devices."""
    _add_data_and_model(sub)
    sub.add_argument("--model", required=True, metavar="SRC", help="model directory, weight file, Hub id or variant")
    sub.add_argument("--variant", type=variant_name, metavar="NAME", help="the shapes of a weight file without config")
    sub.add_argument("--random-weights", action="store_true", help="train a variant from scratch")
    sub.add_argument("--out", required=True, metavar="RUN", help="run directory")
    length = sub.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=positive_int, metavar="N")
    length.add_argument("--steps", type=positive_int, metavar="N", help="optimiser steps")
    sub.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="per process (default 32)")
    sub.add_argument("--lr", type=_positive_float, default=5e-4, help="peak learning rate (default 5e-4)")
    sub.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decay, not on norms/biases (0.05)")
    sub.add_argument("--warmup-steps", type=non_negative_int, default=0, metavar="N")
    sub.add_argument("--layer-decay", type=_positive_float, default=None, help="layer-wise lr decay, e.g. 0.9")
    sub.add_argument("--drop-path", type=_fraction, default=None, metavar="RATE", help="stochastic depth")
    sub.add_argument("--grad-clip", type=_positive_float, default=5.0, metavar="NORM")
    sub.add_argument("--accumulate", type=positive_int, default=1, metavar="N", help="gradient accumulation")
    sub.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    sub.add_argument("--gradient-checkpointing", action="store_true")
    sub.add_argument(
        "--checkpointing-stages",
        type=_stage_list,
        default=None,
        metavar="I,J",
        help="recompute the activations of these stages only (0-based, comma-separated), not every stage",
    )
    sub.add_argument("--ema", type=_fraction, default=None, metavar="DECAY")
    sub.add_argument("--image-size", type=positive_int, default=None, metavar="PX", help="train at this size")
    sub.add_argument("--window-size", type=positive_int, default=None, metavar="W", help="with this window")
    sub.add_argument("--seed", type=non_negative_int, default=0)
    sub.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS")
    sub.add_argument("--resume", action="store_true", help="continue the run in RUN from its checkpoint")
    sub.add_argument("--workers", type=non_negative_int, default=0, help="data-loading processes (default 0)")
    sub.add_argument("--device", default="cpu", metavar="D", help="cpu, cuda (default cpu)")
    sub.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP instead of DDP")
    sub.add_argument(
        "--fsdp-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="with --fsdp: bf16 computes with bf16 copies of the parameters, keeping fp32 masters (default fp32)",
    )
    sub.add_argument("--zero", action="store_true", help="under torchrun with DDP: shard the optimiser state (ZeRO)")


def register(commands: Any) -> None:
    """Add `train` and `evaluate` to the `swinv2` subcommands."""
    fit = commands.add_parser(
        "train",
        help="fine-tune or train a classifier on an image folder or the digits set (resumable, torchrun-ready)",
        description=(
            "Train a Swin V2 classifier on DATA, writing RUN/model (a transformers directory), RUN/checkpoint, "
            "RUN/metrics.jsonl and RUN/curves.png. Run it under `torchrun --nproc_per_node=K -m swinv2 train ...` "
            "to train on K processes. --resume continues a killed run exactly."
        ),
    )
    _add_run_options(fit)
    fit.add_argument("--label-smoothing", type=_fraction, default=0.1)
    fit.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA")
    fit.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA")
    fit.set_defaults(run=train_command, task="classify")

    pretrain = commands.add_parser(
        "pretrain",
        help="SimMIM masked image modelling on an image folder or the digits set (labels unused)",
        description=(
            "Pre-train a Swin V2 encoder with SimMIM on DATA's images: random blocks are masked and the model "
            "regresses their pixels (L1). RUN/model is a Swinv2ForMaskedImageModeling directory that "
            "`swinv2 train --model RUN/model` fine-tunes."
        ),
    )
    _add_run_options(pretrain)
    pretrain.add_argument("--mask-ratio", type=_fraction, default=0.6, help="fraction of blocks masked (0.6)")
    pretrain.add_argument(
        "--mask-patch-size", type=positive_int, default=None, metavar="PX", help="masked block side (default 32)"
    )
    pretrain.set_defaults(run=train_command, task="simmim")

    upscaler = commands.add_parser(
        "train-sr",
        help="train a Swin2SR super-resolution model on a folder of high-resolution images (or 'photos')",
        description=(
            "Train a Swin2SR model on DATA, a folder of high-resolution images (train/ and val/, or one folder split "
            "with the seed) or 'photos' (scikit-image's bundled photos): random crops, bicubic down-scaling on the "
            "fly, L1 loss; held-out PSNR against bicubic upscaling after each epoch. --model is a Swin2SR directory "
            "(with --random-weights only its config.json is used) or an original Swin2SR .pth file."
        ),
    )
    _add_run_options(upscaler)
    upscaler.add_argument(
        "--crop", type=positive_int, default=48, metavar="PX", help="low-resolution side of a training crop (48)"
    )
    upscaler.set_defaults(run=train_command, task="superres")

    measure = commands.add_parser("evaluate", help="top-1/top-5 accuracy, loss and confusion matrix on DATA")
    _add_data_and_model(measure)
    measure.add_argument("--model", required=True, metavar="DIR", help="model directory (or Hub id)")
    measure.add_argument("--split", choices=("val", "train"), default="val")
    measure.add_argument("--batch-size", type=positive_int, default=64, metavar="N")
    measure.add_argument("--seed", type=non_negative_int, default=0, help="the split seed of a folder without val/")
    measure.add_argument("--device", default="cpu", metavar="D")
    measure.add_argument("--json", action="store_true", help="one strict-JSON object")
    measure.set_defaults(run=evaluate_command)

"""`train`: fine-tune (or train from scratch) a Swin V2 classifier on an image folder or the digits set,
resumably, on one process or many under torchrun.

A run directory `RUN/` holds `model/` (a transformers-format directory with its
preprocessor_config.json), `checkpoint/` (everything needed to continue exactly; see
`swinv2.train.checkpoint`), `metrics.jsonl` and `curves.png`. The same call with `resume=True`
continues a killed run from its last checkpoint.

Exactness: the order of an epoch's samples and each sample's augmentation are functions of the seed,
the epoch and the sample's index (`swinv2.train.data`), the data loader draws from its own generator,
and every random-number generator is saved with the checkpoint; so a resumed CPU run in fp32 ends
with the parameters of an uninterrupted one, and K processes at batch b step like one at batch K*b.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from swinv2.io.errors import InputError, quote
from swinv2.io.files import staged_output
from swinv2.models.base import PreTrainedModel
from swinv2.train import distributed
from swinv2.train.checkpoint import (
    Progress,
    ResumeError,
    capture_rng,
    check_same_run,
    load_training_checkpoint,
    restore_rng,
    save_training_checkpoint,
)
from swinv2.train.data import DeterministicSampler, data_class_names, load_classification_data
from swinv2.train.metrics import (
    CURVES_FILE,
    METRICS_FILE,
    Evaluation,
    MetricsLog,
    draw_curves,
    evaluate,
    evaluation_record,
)
from swinv2.train.optim import WarmupCosine, build_optimizer, mix_batch, soft_cross_entropy
from swinv2.train.setup import ModelChoice, prepare_classifier, prepare_sr_model
from swinv2.train.simmim import (
    MaskedImages,
    MaskGenerator,
    default_mask_patch_size,
    prepare_masked_image_model,
    reconstruction_loss,
)
from swinv2.train.sr import SRCrops, SREvaluation, SRHeldOut, evaluate_sr, sr_sources

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: "classify": supervised fine-tuning; "simmim": SimMIM masked image modelling (pre-training);
#: "superres": Swin2SR super-resolution (L1 on random crops, low resolution made on the fly).
TASKS = ("classify", "simmim", "superres")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train` needs; the command line's options map one to one.

    Args:
        data: An image folder (`train/<class>/*`, optionally `val/<class>/*`) or "digits".
        model: A model directory, a weight file (with `variant`), a variant name (with
            `random_weights`) or a Hub id.
        out: The run directory.
        task: "classify" (labels from the data) or "simmim" (masked image modelling; labels unused):
            `mask_ratio` of the image's `mask_patch_size`-pixel blocks are masked (default: the paper's
            32 pixels where the image allows it, see `swinv2.train.simmim.default_mask_patch_size`).
        epochs / steps: Length of the run: whole epochs, or a number of optimiser steps (one of them).
        batch_size: Images per process per forward; an optimiser step sees
            `batch_size * processes * accumulate` images.
        lr: Peak learning rate (after warm-up) of the last layers; earlier ones get `layer_decay` powers.
        min_lr_ratio: Where the cosine decay ends, as a fraction of `lr`.
        precision: "fp32", "bf16" (autocast) or "fp16" (autocast and a gradient scaler).
        ema: Keep an exponential moving average of the weights with this decay; it is what gets
            evaluated and saved.
        fsdp: Under torchrun, shard parameters, gradients and optimiser state with FSDP instead of
            replicating them with DDP; checkpoints hold the gathered state, so any number of processes
            resumes them.
        fsdp_precision: With `fsdp`: "fp32", or "bf16": FSDP's mixed precision (blocks compute with bf16
            copies of the gathered parameters; the sharded parameters, the optimiser state and the
            gradient reduction stay fp32). Independent of `precision` (autocast).
        zero: Under torchrun with DDP: shard the optimiser state over the processes
            (`ZeroRedundancyOptimizer`, ZeRO stage 1); the parameters stay replicated. Not with `fsdp`,
            which already shards it. Checkpoints hold the whole optimiser state.
        gradient_checkpointing_stages: Recompute the activations of these stages only (0-based indices),
            instead of every stage (`gradient_checkpointing`); early, high-resolution stages hold most
            of the activations. The model checkpoints per stage, not per block.
        checkpoint_every: Save a checkpoint every this many optimiser steps (besides the end and on
            SIGTERM / Ctrl-C).
        crop: Super-resolution: side of a training sample's low-resolution crop, in pixels.
    """

    data: str
    model: str
    out: str
    task: str = "classify"
    variant: str | None = None
    random_weights: bool = False
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    warmup_steps: int = 0
    layer_decay: float | None = None
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    drop_path: float | None = None
    grad_clip: float | None = 5.0
    accumulate: int = 1
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    gradient_checkpointing_stages: tuple[int, ...] | None = None
    ema: float | None = None
    image_size: int | None = None
    window_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int | None = None
    log_every: int = 10
    resume: bool = False
    workers: int = 0
    device: str = "cpu"
    fsdp: bool = False
    fsdp_precision: str = "fp32"
    zero: bool = False
    mask_ratio: float = 0.6
    mask_patch_size: int | None = None
    crop: int = 48

    def __post_init__(self) -> None:
        errors = []
        if (self.epochs is None) == (self.steps is None):
            errors.append("give the run's length as epochs or steps (one of them)")
        for name in ("epochs", "steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                errors.append(f"{name} must be a positive int; got {quote(value)}")
        for name in ("batch_size", "accumulate", "log_every", "crop"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                errors.append(f"{name} must be a positive int; got {quote(getattr(self, name))}")
        for name in ("lr", "weight_decay", "min_lr_ratio", "label_smoothing", "mixup", "cutmix"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                errors.append(f"{name} must be a finite non-negative number; got {quote(value)}")
        if not 0 <= self.label_smoothing < 1:
            errors.append(f"label_smoothing must be in [0, 1); got {quote(self.label_smoothing)}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            errors.append(f"layer_decay must be in (0, 1]; got {quote(self.layer_decay)}")
        if self.ema is not None and not 0 < self.ema < 1:
            errors.append(f"ema must be a decay in (0, 1); got {quote(self.ema)}")
        if self.task not in TASKS:
            errors.append(f"task must be one of {list(TASKS)}; got {quote(self.task)}")
        if not (isinstance(self.mask_ratio, float) and 0 < self.mask_ratio < 1):
            errors.append(f"mask_ratio must be in (0, 1); got {quote(self.mask_ratio)}")
        if self.task == "superres" and (self.layer_decay is not None or self.mixup or self.cutmix):
            errors.append("layer_decay, mixup and cutmix are for classifiers, not super-resolution")
        if self.fsdp and self.ema is not None:
            errors.append("ema is not kept with fsdp (the average would need the whole model on every process)")
        if self.fsdp_precision not in distributed.FSDP_PRECISIONS:
            errors.append(
                f"fsdp_precision must be one of {list(distributed.FSDP_PRECISIONS)}; got {quote(self.fsdp_precision)}"
            )
        elif self.fsdp_precision != "fp32" and not self.fsdp:
            errors.append(f"fsdp_precision {quote(self.fsdp_precision)} needs fsdp (it is FSDP's mixed precision)")
        if self.zero and self.fsdp:
            errors.append("zero is for DDP; fsdp already shards the optimiser state (choose one)")
        stages = self.gradient_checkpointing_stages
        if stages is not None:
            if not (
                isinstance(stages, tuple)
                and stages
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in stages)
            ):
                errors.append(
                    "gradient_checkpointing_stages must be a non-empty tuple of stage indices >= 0; "
                    f"got {quote(stages)}"
                )
            elif self.gradient_checkpointing:
                errors.append(
                    "gradient_checkpointing checkpoints every stage; give it or gradient_checkpointing_stages"
                )
        if self.precision not in PRECISIONS:
            errors.append(f"precision must be one of {list(PRECISIONS)}; got {quote(self.precision)}")
        if errors:
            raise InputError("invalid training settings: " + "; ".join(errors))

    def settings(self) -> dict[str, Any]:
        """The settings as JSON, for `settings.json` (tuples as lists, as JSON reads them back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: Super-resolution epochs hold at least this many random crops (held-out PSNR is measured once an epoch).
CROPS_PER_EPOCH = 1024

#: Settings that may differ between a run and its resumption (they do not change the result). The
#: per-process batch may change with the number of processes, as long as the global batch stays the same
#: (`check_global_batch`).
RESUMABLE_CHANGES = ("out", "resume", "workers", "device", "checkpoint_every", "log_every", "batch_size")
#: Settings added after checkpoints were first written, with the value an older checkpoint's run had.
LATER_SETTINGS: dict[str, Any] = {"fsdp_precision": "fp32", "zero": False, "gradient_checkpointing_stages": None}
#: The number of processes, recorded beside the settings in a checkpoint.
PROCESSES_KEY = "processes"


@dataclass(frozen=True)
class EpochEnd:
    """What `train`'s `on_epoch_end` callback gets after each held-out evaluation (main process only)."""

    epoch: int
    step: int
    training_loss: float  # mean over the epoch's images (this process's share of them)
    evaluation: Evaluation | SREvaluation | None  # None for SimMIM runs and without held-out images


@dataclass
class TrainResult:
    """What a run produced."""

    run: Path
    steps: int
    evaluation: Evaluation | SREvaluation | None
    skipped_images: list[tuple[str, str]]  # (path, reason)


class TrainingStopped(KeyboardInterrupt):
    """The run ended early on SIGTERM or Ctrl-C after saving its checkpoint; the same call with
    `resume=True` continues it. A KeyboardInterrupt, so that `except Exception` does not swallow it."""

    def __init__(self, run: Path, step: int, total_steps: int, signum: int | None) -> None:
        self.run, self.step, self.total_steps = run, step, total_steps
        self.signal = signal.SIGINT if signum is None else signal.Signals(signum)
        super().__init__(
            f"stopped by {self.signal.name} after step {step} of {total_steps}; its checkpoint is saved in "
            f"'{run / 'checkpoint'}': the same command with --resume continues it"
        )

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal's number."""
        return 128 + int(self.signal)


class _Stop:
    """The handler of SIGTERM and Ctrl-C (SIGINT): the loop saves a checkpoint after the current step and
    ends, so the checkpoint never holds a half-done optimiser step; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _save_model(run: Path, model: PreTrainedModel, processor: Any) -> None:
    with staged_output(run / "model", overwrite=True) as staged:
        model.save_pretrained(staged, image_processor=processor)


def train(config: TrainConfig, *, on_epoch_end: Callable[[EpochEnd], None] | None = None) -> TrainResult:
    """Run (or resume) a training run; returns where it wrote and its final held-out evaluation.

    `on_epoch_end` is called on the main process after each epoch's evaluation (a progress display).

    Raises:
        InputError: bad settings or data; ResumeError: nothing to resume, or a checkpoint of another run.
    """
    device = torch.device(config.device)
    processes = distributed.start(device)
    if device.type == "cuda" and processes.distributed:
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    run = Path(config.out)
    stop = _Stop()
    # Python takes signal handlers in the main thread only; a run in another thread ends on SIGTERM as usual.
    in_main_thread = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGTERM, signal.SIGINT) if in_main_thread else ()
    previous_handlers = {signum: signal.signal(signum, stop) for signum in handled}
    try:
        return _train(config, run, device, processes, stop, on_epoch_end)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        distributed.stop(processes)


def _train(
    config: TrainConfig,
    run: Path,
    device: torch.device,
    processes: distributed.Processes,
    stop: _Stop,
    on_epoch_end: Callable[[EpochEnd], None] | None,
) -> TrainResult:
    torch.manual_seed(config.seed)
    checkpoint_dir = run / "checkpoint"
    resumed = None
    if config.resume:
        resumed = load_training_checkpoint(checkpoint_dir)
        keys = [k for k in config.settings() if k not in RESUMABLE_CHANGES]
        check_same_run(LATER_SETTINGS | resumed.settings, config.settings(), keys, str(run))
        check_global_batch(resumed.settings, config.batch_size, processes.world_size, str(run))
    elif checkpoint_dir.exists():
        raise ResumeError(f"'{run}' already holds a run; pass --resume to continue it, or choose another --out")
    if processes.main:
        run.mkdir(parents=True, exist_ok=True)

    # ---- model and data
    choice = ModelChoice(
        config.model, config.variant, config.random_weights, config.image_size, config.window_size, config.drop_path
    )
    superres = config.task == "superres"
    class_names = [] if superres else data_class_names(config.data)
    masks: MaskGenerator | None = None
    model: PreTrainedModel
    train_set: Any
    val_set: Any
    processor: Any  # the image processor saved with the model
    if superres:
        model, processor = prepare_sr_model(choice)
        sources = sr_sources(config.data, seed=config.seed, val_fraction=config.val_fraction)
        scale = model.config.upscale if model.config.upsampler else 1
        repeats = max(1, math.ceil(CROPS_PER_EPOCH / len(sources.train)))  # few images: many crops each
        train_set = SRCrops(sources.train, scale=scale, crop=config.crop, repeats=repeats, seed=config.seed)
        val_set = SRHeldOut(sources.val, scale=scale)
        skipped: list[tuple[Path, str]] = sources.skipped
    else:
        if config.task == "simmim":
            model, processor = prepare_masked_image_model(choice)
            image_hw, patch = model.config.image_hw, model.config.patch_hw[0]
            block = config.mask_patch_size or default_mask_patch_size(image_hw, patch)
            masks = MaskGenerator(image_hw, patch, block, config.mask_ratio)
        else:
            model, processor = prepare_classifier(choice, class_names)
        data = load_classification_data(
            config.data, processor=processor, seed=config.seed, val_fraction=config.val_fraction
        )
        train_set = data.train if masks is None else MaskedImages(data.train, masks, config.seed)
        val_set = data.val if masks is None else MaskedImages(data.val, masks, config.seed)
        skipped = list(getattr(data, "skipped", []))
    model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    elif config.gradient_checkpointing_stages is not None:
        checkpoint_stages(model, config.gradient_checkpointing_stages)
    model.train()
    ema = (
        torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema))
        if config.ema is not None
        else None
    )
    if ema is not None and resumed is not None and resumed.ema is not None:
        ema.load_state_dict(resumed.ema)
    model_class = type(model)  # FSDP swaps in a subclass of its own
    sharded = config.fsdp and processes.distributed
    if sharded:
        distributed.shard(model, mixed_precision=config.fsdp_precision)
    trained: nn.Module = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if processes.distributed and not sharded
        else model
    )

    # ---- schedule
    sampler = DeterministicSampler(
        len(train_set),
        seed=config.seed,
        rank=processes.rank,
        world_size=processes.world_size,
        batch_size=config.batch_size,
    )
    micro_steps_per_epoch = sampler.steps_per_epoch
    steps_per_epoch = micro_steps_per_epoch // config.accumulate
    if steps_per_epoch == 0:
        raise InputError(
            f"'{config.data}' has {len(train_set)} training images, fewer than one optimiser step's "
            f"{config.batch_size * processes.world_size * config.accumulate}; lower --batch-size or --accumulate"
        )
    total_steps = config.steps if config.steps is not None else steps_per_epoch * (config.epochs or 0)
    optimizer: torch.optim.Optimizer = build_optimizer(
        model, lr=config.lr, weight_decay=config.weight_decay, layer_decay=config.layer_decay
    )
    zero = config.zero and processes.distributed and not sharded
    if zero:
        optimizer = zero_optimizer(optimizer)
    schedule = WarmupCosine(
        optimizer,
        warmup_steps=min(config.warmup_steps, total_steps - 1),
        total_steps=total_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    mixing = torch.Generator().manual_seed(config.seed + 1)
    progress = Progress()
    if resumed is not None:
        if config.zero:  # torch's format: the whole state, in parameter order; each ZeRO process keeps its part
            distributed.load_full_state(model, None, resumed.model, None)
            optimizer.load_state_dict(resumed.state["optimizer"])
        else:
            distributed.load_full_state(model, optimizer, resumed.model, resumed.state["optimizer"])
        schedule.load_state_dict(resumed.state["schedule"])
        scaler.load_state_dict(resumed.state["scaler"])
        restore_rng(resumed.state["rng"], {"mixing": mixing})
        progress = resumed.progress
    metrics = MetricsLog(run / METRICS_FILE)
    if processes.main:
        metrics.truncate_after(progress.step) if resumed is not None else metrics.path.unlink(missing_ok=True)
        logger.info(
            "training %s on %d %s, %d steps of %d images",
            model_class.__name__,
            len(train_set),
            "crops a epoch" if superres else f"images ({len(class_names)} classes)",
            total_steps,
            config.batch_size * processes.world_size * config.accumulate,
        )

    def save_checkpoint() -> None:
        model_state = distributed.full_model_state(model)  # every process takes part when sharded
        if zero:
            from torch.distributed.optim import ZeroRedundancyOptimizer

            assert isinstance(optimizer, ZeroRedundancyOptimizer)
            optimizer.consolidate_state_dict(to=0)  # every process sends its part to the main one
            optimizer_state = optimizer.state_dict() if processes.main else None
        elif config.zero:  # alone: the same format, so that a resumption under torchrun with ZeRO reads it
            optimizer_state = optimizer.state_dict()
        else:
            optimizer_state = distributed.full_optimizer_state(model, optimizer)
        if not processes.main:
            return
        state = {
            "optimizer": optimizer_state,
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": capture_rng({"mixing": mixing}),
        }
        save_training_checkpoint(
            run / "checkpoint",
            model_state=model_state,
            state=state,
            settings=config.settings() | {PROCESSES_KEY: processes.world_size},
            progress=progress,
            ema_state=None if ema is None else ema.state_dict(),
        )

    # ---- loop
    step, epoch = progress.step, progress.epoch
    evaluation: Evaluation | SREvaluation | None = None
    mixed = masks is None and (config.mixup > 0 or config.cutmix > 0)
    interrupted = stopping = False
    started, images_seen = time.perf_counter(), 0
    bar = tqdm(
        total=total_steps,
        initial=step,
        unit="step",
        desc=config.task,
        disable=not (processes.main and sys.stderr.isatty()),
    )
    try:
        while step < total_steps:
            sampler.set_epoch(epoch, progress.step_in_epoch * config.accumulate if epoch == progress.epoch else 0)
            train_set.set_epoch(epoch)
            loader = DataLoader(
                train_set, batch_sampler=sampler, num_workers=config.workers, generator=torch.Generator()
            )
            in_epoch = sampler.start_step // config.accumulate
            running, count = 0.0, 0
            epoch_loss, epoch_images = 0.0, 0
            for micro, (pixels, labels) in enumerate(loader, start=sampler.start_step):
                pixels, labels = pixels.to(device), labels.to(device)
                last_micro = (micro + 1) % config.accumulate == 0
                ddp = trained if isinstance(trained, DistributedDataParallel) else None
                sync = ddp.no_sync() if ddp is not None and not last_micro else nullcontext()
                with sync:
                    with _autocast(device, config.precision):
                        if masks is not None:  # labels are the masks here
                            loss = trained(pixels, bool_masked_pos=labels).loss
                        elif superres:  # labels are the high-resolution crops: L1
                            loss = trained(pixels, labels=labels).loss
                        elif mixed:
                            pixels, targets = mix_batch(
                                pixels,
                                labels,
                                len(class_names),
                                mixup_alpha=config.mixup,
                                cutmix_alpha=config.cutmix,
                                label_smoothing=config.label_smoothing,
                                generator=mixing,
                            )
                            loss = soft_cross_entropy(trained(pixels).logits.float(), targets)
                        else:
                            logits = trained(pixels).logits.float()  # (b, classes)
                            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                    scaler.scale(loss / config.accumulate).backward()
                running += loss.item() * len(labels)
                count += len(labels)
                epoch_loss += loss.item() * len(labels)
                epoch_images += len(labels)
                if not last_micro:
                    continue
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                if ema is not None:
                    ema.update_parameters(model)
                step, in_epoch = step + 1, in_epoch + 1
                images_seen += count * processes.world_size
                progress = Progress(step, epoch, in_epoch)
                bar.update(1)
                if processes.main and (step % config.log_every == 0 or step == total_steps):
                    elapsed = time.perf_counter() - started
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": running / max(count, 1),
                        "lr": optimizer.param_groups[-1]["lr"],
                        "images_per_s": images_seen / elapsed if elapsed > 0 else None,
                    }
                    metrics.append(record)
                    if bar.disable:  # not a terminal: a plain line per logged step instead of the bar
                        logger.info("step %d/%d: loss %.4f, lr %.3g", step, total_steps, record["loss"], record["lr"])
                    else:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", epoch=epoch)
                    running, count = 0.0, 0
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save_checkpoint()
                stopping = distributed.any_process(stop.requested, processes)  # every process stops after this step
                if stopping or step >= total_steps:
                    break
            if stopping:
                break
            if in_epoch >= steps_per_epoch or step >= total_steps:
                if superres:
                    evaluation = _evaluate_sr(ema or model, val_set, config, device, processes, sharded)
                    if processes.main and evaluation is not None:
                        metrics.append({"step": step, "epoch": epoch, "eval": dataclasses.asdict(evaluation)})
                        logger.info("epoch %d, step %d: %s", epoch, step, evaluation.summary())
                elif masks is None:
                    evaluation = _evaluate(ema or model, val_set, class_names, config, device, processes, sharded)
                    if processes.main and evaluation is not None:
                        metrics.append(evaluation_record(step, epoch, evaluation))
                        logger.info("epoch %d, step %d: %s", epoch, step, evaluation.summary())
                elif (processes.main or sharded) and len(val_set):
                    loss_value = reconstruction_loss(_inner(ema or model), val_set, config.batch_size, device)
                    if processes.main:
                        record = {"loss": loss_value, "images": len(val_set)}
                        metrics.append({"step": step, "epoch": epoch, "eval": record})
                        logger.info("epoch %d, step %d: held-out reconstruction loss %.4f", epoch, step, loss_value)
                distributed.barrier(processes)
                if on_epoch_end is not None and processes.main:
                    on_epoch_end(EpochEnd(epoch, step, epoch_loss / max(epoch_images, 1), evaluation))
                if in_epoch >= steps_per_epoch:
                    epoch += 1
                    progress = Progress(step, epoch, 0)
            if step < total_steps and distributed.any_process(stop.requested, processes):  # during the evaluation
                stopping = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    stopping = stopping and step < total_steps  # a signal during the last step: the run is complete
    save_checkpoint()
    if interrupted or stopping:
        distributed.barrier(processes)
        raise TrainingStopped(run, step, total_steps, None if interrupted else stop.signal)
    final = _unwrap_final(model, ema)
    if sharded:  # a plain copy of the gathered weights (on the main process) for the transformers directory
        gathered = distributed.full_model_state(model)
        if processes.main:
            final = model_class(model.config)  # type: ignore[arg-type]  # the model's own config class
            final.load_state_dict(gathered)
    if processes.main:
        _save_model(run, final, processor)
        try:
            draw_curves(metrics.read(), run / CURVES_FILE, title=f"{config.data}: {model_class.__name__}")
        except ImportError:
            logger.warning("curves.png not drawn: it needs matplotlib (pip install 'swinv2[plots]')")
    distributed.barrier(processes)
    return TrainResult(run, step, evaluation, [(str(path), reason) for path, reason in skipped])


def zero_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`optimizer` (groups, hyper-parameters, class) as a `ZeroRedundancyOptimizer`: each DDP process keeps
    the state of its share of the parameters only and broadcasts them after its step. Build it before any
    step (the state of `optimizer` is not carried over)."""
    import inspect

    from torch.distributed.optim import ZeroRedundancyOptimizer

    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted and k != "params"}
    groups = [dict(group) for group in optimizer.param_groups]
    return ZeroRedundancyOptimizer(groups, optimizer_class=type(optimizer), **defaults)


def checkpoint_stages(model: nn.Module, stages: tuple[int, ...]) -> None:
    """Recompute the activations of the given stages (0-based, in the order of `model.modules()`: Swin V2's
    `encoder.layers`, Swin2SR's residual stages) in the backward pass, and store those of the others. The
    models checkpoint per stage (`run_blocks` takes one switch for all of a stage's blocks).

    Raises:
        InputError: a stage index the model does not have.
    """
    found = [m for m in model.modules() if hasattr(m, "gradient_checkpointing") and type(m).__name__.endswith("Stage")]
    wrong = [i for i in stages if i >= len(found)]
    if wrong:
        raise InputError(f"gradient checkpointing stages {wrong} do not exist: the model has {len(found)} stages")
    for index, stage in enumerate(found):
        setattr(stage, "gradient_checkpointing", index in stages)  # noqa: B010
        setattr(stage, "checkpoint_kwargs", {"use_reentrant": False})  # noqa: B010


def check_global_batch(saved: dict[str, Any], batch_size: int, world_size: int, where: str) -> None:
    """A run resumes on any number of processes whose batches add up to the checkpoint's global batch:
    then every step sees the same images (`swinv2.train.data.rank_batches`) and the run goes on as it
    would have.

    Raises:
        ResumeError: another global batch, with both and the per-process batch that would match.
    """
    saved_processes = saved.get(PROCESSES_KEY, world_size)
    saved_batch = saved.get("batch_size")
    if not (isinstance(saved_processes, int) and isinstance(saved_batch, int)):
        raise ResumeError(f"'{where}' holds a checkpoint whose batch size or process count is damaged")
    saved_global, global_batch = saved_batch * saved_processes, batch_size * world_size
    if saved_global != global_batch:
        fits = (
            f"--batch-size {saved_global // world_size}" if saved_global % world_size == 0 else "another process count"
        )
        raise ResumeError(
            f"'{where}' was trained with a global batch of {saved_global} ({saved_processes} process(es) x "
            f"{saved_batch}); now {global_batch} ({world_size} process(es) x {batch_size}): resume with {fits} "
            "on this number of processes, or start a new run in another directory"
        )


def _unwrap_final(model: PreTrainedModel, ema: Any) -> PreTrainedModel:
    """The weights a run publishes: the moving average where one was kept."""
    if ema is None:
        return model
    averaged = ema.module
    assert isinstance(averaged, PreTrainedModel)
    return averaged


def _inner(model: nn.Module) -> nn.Module:
    """The model inside a DDP or moving-average wrapper."""
    wrappers = (DistributedDataParallel, torch.optim.swa_utils.AveragedModel)
    inner = model.module if isinstance(model, wrappers) else model
    assert isinstance(inner, nn.Module)
    return inner


def _evaluate_sr(
    model: nn.Module,
    dataset: SRHeldOut,
    config: TrainConfig,
    device: torch.device,
    processes: distributed.Processes,
    sharded: bool,
) -> SREvaluation | None:
    """PSNR on the held-out images, on the main process (or every process where the model is sharded)."""
    result = None
    if (processes.main or sharded) and len(dataset):
        result = evaluate_sr(_inner(model), dataset, device, PRECISIONS[config.precision])
    distributed.barrier(processes)
    return result


def _evaluate(
    model: nn.Module,
    dataset: Any,
    class_names: list[str],
    config: TrainConfig,
    device: torch.device,
    processes: distributed.Processes,
    sharded: bool = False,
) -> Evaluation | None:
    """The held-out evaluation, on the main process (the others wait), or on every process where the
    model is sharded (each forward gathers the shards from all of them)."""
    result = None
    if (processes.main or sharded) and len(dataset):
        result = evaluate(
            _inner(model),
            dataset,
            num_classes=len(class_names),
            batch_size=config.batch_size,
            device=device,
            autocast_dtype=PRECISIONS[config.precision],
            workers=config.workers,
        )
    distributed.barrier(processes)
    return result

"""Plan a training run before renting the hardware: parameters, FLOPs and the memory per process of one
training step (forward, backward, AdamW step), measured by running the model on fake tensors.

Nothing here is a formula for the model: the model is built on the meta device, materialised as fake
tensors (`FakeTensorMode`: shapes, dtypes and storages, no data), and a training step runs on a fake
batch while `LiveBytes` follows every tensor storage from the op that allocates it to its release. The
peak of those live bytes is the plan's peak; FLOPs are counted on the same fake model with
`torch.utils.flop_counter.FlopCounterMode`. The same tracker run on real tensors measures a real CPU
step (`benchmarks/plan_validation.py` compares the two).

What the plan models:
- fp32 on one process (no FSDP): two fake steps exactly as `swinv2 train` runs them; the peak of the
  second (steady state, optimiser state allocated) is the plan.
- FSDP over N processes (`train.distributed.shard`: one unit per Swinv2Block, the rest of the model one
  root unit): parameters, gradients and optimiser state are 1/N each; the root unit stays gathered for
  the step (FSDP keeps the root unsharded after forward) and up to two blocks are gathered at once
  (the current one and the one prefetched), plus one block's gradient in fp32 for the reduce-scatter.
  The sizes of those units are the fake model's own. The activations and transient bytes come from a
  fake forward and backward in which each gradient is dropped as soon as it is accumulated (what the
  reduce-scatter does with the unsharded gradient).
- bf16 is FSDP's `MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)`: fp32
  master parameters, gradients and AdamW state (sharded with FSDP), the forward and backward run on a
  bf16 copy of the parameters (the gathered units; the whole model without FSDP), so activations and
  unsharded gradients are bf16. `swinv2 train --precision bf16` autocasts instead (fp32 parameters in
  the ops' fp32 list keep some activations fp32): expect its activations somewhat above this plan.
- Activation checkpointing: the fake step runs with `gradient_checkpointing_enable()`.

The tracker counts storages made by ATen ops (and the model's parameters and buffers); allocator
caching, fragmentation, CUDA context, NCCL buffers and library workspaces are not in it: leave a
margin (`Plan.fits` takes one).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from swinv2.config import CONFIG_NAME, Swinv2Config
from swinv2.io.errors import InputError, quote
from swinv2.models import Swinv2ForImageClassification
from swinv2.zoo import get_variant

Precision = Literal["fp32", "bf16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
OPTIMIZERS = ("adamw",)
MASTER_BYTES = 4  # fp32 master parameters, gradients after the reduce-scatter, AdamW moments
GATHERED_BLOCKS = 2  # FSDP gathers the next block while the current one computes (forward and backward prefetch)


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages: each storage an op returns is counted once, from the op that makes
    it until its last reference goes (a weak reference's callback), with the peak since `reset_peak`.

    Works the same on fake and on real tensors. Storages made outside this mode (parameters built
    before it) count only once `add`ed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def add(self, tensor: torch.Tensor) -> None:
        """Count `tensor`'s storage (once, however many tensors view it)."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def reset_peak(self) -> None:
        """Start a new peak from the bytes live now."""
        self.peak = self.live

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.add(value)
        return out


@dataclass(frozen=True)
class Settings:
    """What a plan is for: the model shape, the batch and how the step is distributed."""

    image_size: int
    window_size: int
    batch_size: int
    precision: str
    world_size: int
    fsdp: bool
    activation_checkpointing: bool
    optimizer: str


@dataclass(frozen=True)
class Plan:
    """Parameters, forward FLOPs per image and bytes per process of one training step.

    `flops_per_image` counts a multiply-add as 2 FLOPs (FlopCounterMode's convention), forward only, the
    position-bias MLP included (training recomputes it every step); a training step is about 3x that.
    Memory is per process: `parameter_bytes`, `gradient_bytes` and `optimizer_bytes` are what persists
    between steps (sharded with FSDP; fp32 masters under bf16), `compute_parameter_bytes` the gathered
    or bf16 copies the step computes with, `activation_bytes` what the forward leaves saved for the
    backward, and `peak_bytes` the most live at once during the step.
    """

    settings: Settings
    parameters: int
    flops_per_image: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    compute_parameter_bytes: int
    activation_bytes: int
    peak_bytes: int
    largest_unit_bytes: int
    notes: tuple[str, ...] = field(default=())

    def fits(self, device_bytes: int, margin: float = 0.1) -> bool:
        """Whether the peak fits in `device_bytes` with a fraction `margin` kept free (allocator, CUDA
        context, communication buffers: none of which the plan counts)."""
        return self.peak_bytes <= device_bytes * (1.0 - margin)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON-ready values."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["flops_convention"] = "multiply-add = 2 FLOPs; forward pass only"
        return out


def resolve_config(source: Swinv2Config | str | os.PathLike[str]) -> Swinv2Config:
    """A config as given, a model directory's config.json, or a variant's (`swinv2.zoo`) config.

    Raises:
        InputError: `source` is neither a directory holding config.json nor a variant name.
    """
    if isinstance(source, Swinv2Config):
        return source
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise InputError(f"'{source}' is a directory without {CONFIG_NAME}: a model directory needs one")
        return Swinv2Config.from_pretrained(path)
    try:
        return get_variant(str(source)).config
    except KeyError as err:
        raise InputError(f"{err.args[0]}; nor is it a model directory") from None


def _check(batch_size: int, precision: str, world_size: int, optimizer: str, image_size: int | None) -> None:
    problems = []
    if not (isinstance(batch_size, int) and batch_size >= 1):
        problems.append(f"batch_size ({quote(batch_size)}) must be an integer of at least 1")
    if not (isinstance(world_size, int) and world_size >= 1):
        problems.append(f"world_size ({quote(world_size)}) must be an integer of at least 1")
    if precision not in PRECISIONS:
        problems.append(f"precision ({quote(precision)}) must be one of {sorted(PRECISIONS)}")
    if optimizer not in OPTIMIZERS:
        problems.append(f"optimizer ({quote(optimizer)}) must be one of {list(OPTIMIZERS)}")
    if image_size is not None and not (isinstance(image_size, int) and image_size >= 1):
        problems.append(f"image_size ({quote(image_size)}) must be a positive integer")
    if problems:
        raise InputError("; ".join(problems))


def build_meta_model(config: Swinv2Config) -> Swinv2ForImageClassification:
    """The classifier for `config` on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return Swinv2ForImageClassification(config)


def _block_parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(largest Swinv2Block's parameter count, parameters outside every block): FSDP's units as `shard` makes them."""
    blocks = [m for m in model.modules() if type(m).__name__ == "Swinv2Block"]
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    root = sum(p.numel() for p in model.parameters() if id(p) not in in_blocks)
    return largest, root


@dataclass
class _Measured:
    peak: int = 0  # bytes live at most during the measured part
    start: int = 0  # bytes live when it started
    activations: int = 0  # bytes the forward left alive for the backward
    gradients: int = 0
    optimizer: int = 0
    parameters: int = 0  # the model's parameters and buffers as built (compute dtype)


@contextlib.contextmanager
def _fake_mode() -> Iterator[None]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        yield


def _loss(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(pixels).logits, labels)


def measure_step(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    *,
    optimizer_step: bool = True,
    drop_gradients: bool = False,
    tracker: LiveBytes | None = None,
) -> _Measured:
    """Bytes of a training step on `model` (fake or real tensors): with `optimizer_step`, two steps of
    AdamW and the second one's peak (the steady state); else one forward and backward, each gradient
    dropped as soon as it is accumulated when `drop_gradients` (FSDP's reduce-scatter frees it)."""
    tracker = tracker or LiveBytes()
    measured = _Measured()
    handles = []
    if drop_gradients:

        def drop(p: torch.Tensor) -> None:
            p.grad = None

        handles = [p.register_post_accumulate_grad_hook(drop) for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if optimizer_step else None
    try:
        with tracker:
            for tensor in (*model.parameters(), *model.buffers(), pixels, labels):
                tracker.add(tensor)
            measured.parameters = tracker.live - pixels.untyped_storage().nbytes() - labels.untyped_storage().nbytes()
            for step in range(2 if optimizer is not None else 1):
                measured.start = tracker.live
                tracker.reset_peak()
                loss = _loss(model, pixels, labels)
                measured.activations = tracker.live - measured.start
                loss.backward()
                del loss
                grads = [p.grad.untyped_storage() for p in model.parameters() if p.grad is not None]
                measured.gradients = sum({id(s): s.nbytes() for s in grads}.values())  # some are views of one
                del grads  # or they would stay alive into the next step
                if optimizer is not None:
                    before = tracker.live
                    optimizer.step()
                    if step == 0:
                        measured.optimizer = tracker.live - before
                    optimizer.zero_grad(set_to_none=True)
            measured.peak = tracker.peak
    finally:
        for handle in handles:
            handle.remove()
    return measured


@functools.lru_cache(maxsize=64)
def _optimizer_bytes(config_json: str) -> tuple[int, int]:
    """(AdamW state bytes, bytes its step needs beyond params, grads and state) for fp32 masters: one
    fake AdamW step on fake fp32 parameters with fake gradients."""
    meta = build_meta_model(Swinv2Config.from_dict(json.loads(config_json)))
    with _fake_mode():
        model = meta.to_empty(device="cpu")
        params = list(model.parameters())
        grads = [torch.zeros_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        tracker = LiveBytes()
        with tracker:
            for tensor in (*params, *grads):
                tracker.add(tensor)
            before = tracker.live
            optimizer.step()
            state = tracker.live - before
            transient = tracker.peak - tracker.live
    return state, transient


@functools.lru_cache(maxsize=64)
def _fake_step(
    config_json: str, batch_size: int, precision: str, checkpointing: bool, simple: bool
) -> tuple[int, _Measured]:
    """(forward FLOPs per image, bytes) of the fake step; cached, as plans for other world sizes share it."""
    config = Swinv2Config.from_dict(json.loads(config_json))
    dtype = PRECISIONS[precision]
    meta = build_meta_model(config).to(dtype)  # on meta: under the fake mode, weak references block the swap
    side = config.image_hw[0]
    with _fake_mode():
        model = meta.to_empty(device="cpu").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        pixels = torch.empty(batch_size, config.num_channels, side, side, dtype=dtype)
        labels = torch.zeros(batch_size, dtype=torch.long)
        flops = count_forward_flops(model, pixels) // batch_size
        measured = measure_step(model, pixels, labels, optimizer_step=simple, drop_gradients=not simple)
    return flops, measured


def count_forward_flops(model: torch.nn.Module, pixels: torch.Tensor) -> int:
    """FLOPs of one training-mode forward (no gradients kept) on the model's eager attention, whose ops
    the counter knows; multiply-add = 2."""
    from torch.utils.flop_counter import FlopCounterMode

    implementation = getattr(model.config, "attn_implementation", None)
    set_implementation: Callable[[str], None] = model.set_attn_implementation  # type: ignore[assignment]
    set_implementation("eager")
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(pixels)
    finally:
        if implementation is not None:
            set_implementation(implementation)
    return int(counter.get_total_flops())


def plan(
    source: Swinv2Config | str | os.PathLike[str],
    *,
    image_size: int | None = None,
    window_size: int | None = None,
    batch_size: int = 1,
    precision: Precision | str = "fp32",
    world_size: int = 1,
    fsdp: bool = False,
    activation_checkpointing: bool = False,
    optimizer: str = "adamw",
) -> Plan:
    """Plan one training step of `source`'s classifier: parameters, forward FLOPs per image, bytes per process.

    Args:
        source: A `Swinv2Config`, a model directory (its config.json) or a variant name.
        image_size: Square input side in pixels (default: the config's).
        window_size: Attention window (default: the config's).
        batch_size: Images per process per step.
        precision: "fp32", or "bf16" as FSDP's MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32).
        world_size: Processes sharing the model with FSDP (ignored without `fsdp`: plain data parallel
            replicates the model, so the per-process memory is world size 1's).
        fsdp: Shard as `swinv2.train.distributed.shard` does.
        activation_checkpointing: Recompute each block's activations in the backward.
        optimizer: "adamw" (the only one planned).

    Returns:
        A `Plan`.

    Raises:
        InputError: a bad value, an unknown model, or a config the sizes make invalid.

    Example:
        >>> p = plan("swinv2_tiny_window8_256", image_size=128, window_size=4)
        >>> p.parameters > 0 and p.peak_bytes > p.parameter_bytes
        True
    """
    _check(batch_size, precision, world_size, optimizer, image_size)
    config = resolve_config(source)
    changes: dict[str, Any] = {}
    if image_size is not None:
        changes["image_size"] = image_size
    if window_size is not None:
        changes["window_size"] = window_size
    if changes:
        config = config.replace(**changes)
    side = config.image_hw[0]
    if config.image_hw[0] != config.image_hw[1]:
        raise InputError(f"image_size ({quote(config.image_size)}) must be square to plan; pass image_size=N")
    shards = world_size if fsdp else 1
    settings = Settings(
        side, int(config.window_size), batch_size, precision, world_size, fsdp, activation_checkpointing, optimizer
    )
    dtype = PRECISIONS[precision]
    meta = build_meta_model(config)
    count = sum(p.numel() for p in meta.parameters())
    largest_block, root = _block_parameter_counts(meta)
    element = torch.empty((), dtype=dtype).element_size()
    notes: list[str] = []
    if world_size > 1 and not fsdp:
        notes.append(f"no FSDP: each of the {world_size} processes holds the whole model (data parallel)")

    simple = not fsdp and precision == "fp32"
    flops, measured = _fake_step(
        config.to_json_string(use_diff=False), batch_size, precision, activation_checkpointing, simple
    )

    if simple:  # the fake steady-state step is the plan
        return Plan(
            settings=settings,
            parameters=count,
            flops_per_image=flops,
            parameter_bytes=count * MASTER_BYTES,
            gradient_bytes=measured.gradients,
            optimizer_bytes=measured.optimizer,
            compute_parameter_bytes=0,
            activation_bytes=measured.activations,
            peak_bytes=measured.peak,
            largest_unit_bytes=largest_block * MASTER_BYTES,
            notes=tuple(notes),
        )

    state, optimizer_transient = _optimizer_bytes(config.to_json_string(use_diff=False))
    masters = -(-count // shards) * MASTER_BYTES
    gradients = masters
    optimizer_state = -(-state // shards)
    buffers = measured.parameters - count * element  # non-persistent tables, in the compute dtype
    if fsdp:
        compute = (root + GATHERED_BLOCKS * largest_block) * element  # gathered units (bf16 or fp32)
        compute += largest_block * MASTER_BYTES  # one block's gradient in fp32 for the reduce-scatter
        notes.append("FSDP: root unit + 2 gathered blocks + one block's fp32 gradient for the reduce-scatter")
    else:
        compute = count * element  # the bf16 copy of the whole model
    if precision == "fp32" and fsdp and shards == 1:
        compute = 0  # one process: the unsharded parameters are the masters
    transient = measured.peak - measured.start  # activations, unsharded gradients in flight, temporaries
    inputs = measured.start - measured.parameters
    persistent = masters + gradients + optimizer_state + buffers
    peak = max(
        persistent + compute + inputs + transient,
        persistent + -(-optimizer_transient // shards),
    )
    return Plan(
        settings=settings,
        parameters=count,
        flops_per_image=flops,
        parameter_bytes=masters,
        gradient_bytes=gradients,
        optimizer_bytes=optimizer_state,
        compute_parameter_bytes=compute,
        activation_bytes=measured.activations,
        peak_bytes=peak,
        largest_unit_bytes=largest_block * element,
        notes=tuple(notes),
    )

"""Run by tests/unit/train/test_sharding.py under `torchrun --standalone --nproc_per_node=2` (gloo, CPU):
every sharding check in one launch (a launch costs seconds). Each check that passes prints `PASS <name>`
on rank 0; a failure raises (non-zero exit)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution, Swinv2Config, Swinv2ForImageClassification
from swinv2.train import distributed
from swinv2.train.optim import build_optimizer
from swinv2.train.sharding import build_sharded, load_sharded, save_sharded

# depths (2, 3): 5 blocks, odd sizes, so that some shards are uneven
CONFIG = Swinv2Config(
    image_size=32, patch_size=4, embed_dim=16, depths=(2, 3), num_heads=(2, 4), window_size=4, num_labels=5,
    drop_path_rate=0.0,
)  # fmt: skip
SR_CONFIG = Swin2SRConfig(
    image_size=16, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, drop_path_rate=0.0
)
SEED = 7


def log(name: str) -> None:
    if dist.get_rank() == 0:
        print(f"PASS {name}", flush=True)


def plain(model_class: type, config: object) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return model_class(config)


def check_equal_states(expected: torch.nn.Module, got: torch.nn.Module, what: str) -> None:
    gathered = distributed.full_model_state(got)  # on rank 0 only (offloaded to the CPU)
    if dist.get_rank() != 0:
        return
    reference = expected.state_dict()
    if gathered.keys() != reference.keys():
        raise AssertionError(f"{what}: keys differ: {sorted(gathered.keys() ^ reference.keys())}")
    for key, value in reference.items():
        if not torch.equal(gathered[key], value):
            raise AssertionError(f"{what}: {key} differs by {(gathered[key] - value).abs().max()}")


def check_build(work: Path) -> None:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = plain(Swinv2ForImageClassification, CONFIG)
    after_plain = torch.get_rng_state()
    model = build_sharded(Swinv2ForImageClassification, CONFIG, seed=SEED)
    if not torch.equal(torch.get_rng_state(), after_plain):
        raise AssertionError("the generator is not where an ordinary construction leaves it")
    check_equal_states(expected, model, "build_sharded")
    for (name, buffer), (_, reference) in zip(model.named_buffers(), expected.named_buffers(), strict=True):
        if not torch.equal(buffer, reference):
            raise AssertionError(f"buffer {name} differs")
    model.eval(), expected.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images).logits, expected(images).logits, atol=0, rtol=0)
    assert isinstance(model, FSDPModule)
    model.reshard()  # FSDP leaves the root's parameters gathered after a forward without backward
    log("build_sharded_equals_plain")

    sr = build_sharded(Swin2SRForImageSuperResolution, SR_CONFIG, seed=SEED)
    sr_expected = plain(Swin2SRForImageSuperResolution, SR_CONFIG)
    check_equal_states(sr_expected, sr, "build_sharded Swin2SR")
    low = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    sr.eval(), sr_expected.eval()
    with torch.no_grad():
        torch.testing.assert_close(sr(low).reconstruction, sr_expected(low).reconstruction, atol=0, rtol=0)
    log("build_sharded_swin2sr")

    # ---- DCP round trip: a trained step's weights and optimiser state into a fresh meta-built model
    model.train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    labels = torch.tensor([1, 3])
    torch.nn.functional.cross_entropy(model(images).logits, labels).backward()
    optimizer.step()
    optimizer.zero_grad()
    directory = work / "sharded"
    save_sharded(directory, model, optimizer)
    save_sharded(directory, model, optimizer)  # replacing a previous checkpoint
    saved = distributed.full_model_state(model)
    if dist.get_rank() == 0:
        torch.save(saved, work / "saved.pt")  # for the test's one-process load
    if not (directory / ".metadata").is_file() or (work / "sharded.partial").exists():
        raise AssertionError("save_sharded left no complete directory, or its staging directory")
    fresh = build_sharded(Swinv2ForImageClassification, CONFIG, seed=SEED + 1)
    fresh_optimizer = build_optimizer(fresh, lr=1e-3, weight_decay=0.05)
    load_sharded(directory, fresh, fresh_optimizer)
    check_equal_states_between(model, fresh)
    torch.nn.functional.cross_entropy(model(images).logits, labels).backward()
    torch.nn.functional.cross_entropy(fresh(images).logits, labels).backward()
    optimizer.step(), fresh_optimizer.step()  # equal optimiser state: equal after another step
    check_equal_states_between(model, fresh)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(images).logits, model(images).logits, atol=0, rtol=0)
    log("dcp_round_trip")


def check_equal_states_between(a: torch.nn.Module, b: torch.nn.Module) -> None:
    first, second = distributed.full_model_state(a), distributed.full_model_state(b)  # rank 0 only
    for key, value in first.items():
        if not torch.equal(second[key], value):
            raise AssertionError(f"after loading: {key} differs")


def check_bf16() -> None:
    model = build_sharded(Swinv2ForImageClassification, CONFIG, seed=SEED, mixed_precision="bf16")
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1 + dist.get_rank()))
    before = {k: v.clone() for k, v in distributed.full_model_state(model).items()}
    for _ in range(2):
        logits = model(images).logits
        if logits.dtype != torch.bfloat16:
            raise AssertionError(f"bf16 FSDP computed in {logits.dtype}")
        torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 4])).backward()
        optimizer.step()
        optimizer.zero_grad()
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise AssertionError(f"master parameters are {dtypes}, not fp32")
    state = optimizer.state[next(iter(model.parameters()))]
    if state["exp_avg"].dtype != torch.float32:
        raise AssertionError("optimiser state is not fp32")
    after = distributed.full_model_state(model)
    if dist.get_rank() == 0 and all(torch.equal(before[k], after[k]) for k in before):
        raise AssertionError("bf16 steps changed nothing")
    log("bf16_mixed_precision")


def check_zero(work: Path) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from swinv2.train.trainer import zero_optimizer

    def run(steps: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
        ddp = DistributedDataParallel(model)
        generator = torch.Generator().manual_seed(seed + dist.get_rank())
        for _ in range(steps):
            images = torch.randn(2, 3, 32, 32, generator=generator)
            torch.nn.functional.cross_entropy(ddp(images).logits, torch.tensor([0, 2])).backward()
            optimizer.step()
            optimizer.zero_grad()

    def build(zero: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = plain(Swinv2ForImageClassification, CONFIG)
        optimizer: torch.optim.Optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.8)
        return model, zero_optimizer(optimizer) if zero else optimizer

    results = []
    for zero in (False, True):
        model, optimizer = build(zero)
        run(4, model, optimizer, seed=11)
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for key, value in results[0].items():
        torch.testing.assert_close(results[1][key], value, atol=1e-6, rtol=0, msg=key)
    log("zero_equals_ddp")

    # the trainer's checkpoint: consolidated on rank 0, saved, read back by every process into a fresh ZeRO
    assert isinstance(optimizer, ZeroRedundancyOptimizer)
    optimizer.consolidate_state_dict(to=0)
    if dist.get_rank() == 0:
        full = optimizer.state_dict()
        if len(full["state"]) != len(list(model.parameters())):
            raise AssertionError("consolidated ZeRO state misses parameters")
        torch.save({"model": model.state_dict(), "optimizer": full}, work / "zero.pt")
    dist.barrier()
    saved = torch.load(work / "zero.pt", weights_only=True)
    resumed, resumed_optimizer = build(True)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    run(2, model, optimizer, seed=21)
    run(2, resumed, resumed_optimizer, seed=21)
    for key, value in model.state_dict().items():
        if not torch.equal(resumed.state_dict()[key], value):
            raise AssertionError(f"ZeRO resumed from its checkpoint: {key} differs")
    log("zero_checkpoint_resumes")


def main() -> None:
    work = Path(sys.argv[1])
    distributed.start(torch.device("cpu"))
    try:
        check_build(work)
        check_bf16()
        check_zero(work)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

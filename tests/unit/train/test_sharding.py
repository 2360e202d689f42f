"""Sharded training for models too large for one process: meta-device construction materialised shard by
shard with the weights of an ordinary construction, sharded (DCP) checkpoints, bf16 FSDP, ZeRO under DDP,
and per-stage activation checkpointing. The distributed checks run in one torchrun launch
(`sharding_worker.py`, two gloo processes on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution, Swinv2Config, Swinv2ForImageClassification
from swinv2.io.errors import InputError
from swinv2.train.sharding import MetaRecorder, load_sharded
from swinv2.train.trainer import TrainConfig, checkpoint_stages, train

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
WORKER = Path(__file__).with_name("sharding_worker.py")
CONFIG = Swinv2Config(
    image_size=32, patch_size=4, embed_dim=16, depths=(2, 3), num_heads=(2, 4), window_size=4, num_labels=5,
    drop_path_rate=0.0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (Swinv2ForImageClassification, CONFIG),
        (Swin2SRForImageSuperResolution, Swin2SRConfig(image_size=16, embed_dim=16, depths=(2,), num_heads=(2,))),
    ],
)
def test_meta_construction_replays_each_tensor_of_an_ordinary_one(model_class: type, config: object) -> None:
    """Every parameter and buffer rebuilt alone from the recorded meta construction equals, bit for bit,
    the ordinary construction's; the generator ends where the ordinary construction leaves it."""
    torch.manual_seed(5)
    expected = model_class(config)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    recorder = MetaRecorder()
    with torch.device("meta"), recorder:
        model = model_class(config)
    assert torch.equal(torch.get_rng_state(), after)
    pairs = [
        *zip(model.named_parameters(), expected.named_parameters(), strict=True),
        *zip(model.named_buffers(), expected.named_buffers(), strict=True),
    ]
    for (name, meta), (_, reference) in pairs:
        value = recorder.materialize(meta)
        assert value.dtype == reference.dtype and torch.equal(value, reference.detach()), name


def test_two_processes_build_save_load_bf16_and_zero(tmp_path: Path) -> None:
    """Two gloo processes: (1) `build_sharded` gathers to the ordinary construction's weights and buffers,
    bit for bit, and computes the same logits (Swin V2 classifier, Swin2SR); (2) a DCP save after a step
    and a load into a freshly meta-built model give equal weights, optimiser state (equal after one more
    step) and logits; (3) bf16 FSDP computes in bf16 and keeps fp32 master parameters and optimiser state;
    (4) ZeRO under DDP ends 4 steps within 1e-6 of plain DDP (layer-decayed groups), and its consolidated
    state, saved and loaded into a fresh ZeRO optimiser, continues bit for bit like the original."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", str(WORKER), str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    passed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("PASS ")}
    assert passed == {
        "build_sharded_equals_plain",
        "build_sharded_swin2sr",
        "dcp_round_trip",
        "bf16_mixed_precision",
        "zero_equals_ddp",
        "zero_checkpoint_resumes",
    }
    # the sharded checkpoint also loads, bit for bit, into one process without a process group
    model = Swinv2ForImageClassification(CONFIG)
    load_sharded(tmp_path / "sharded", model)
    expected = torch.load(tmp_path / "saved.pt", weights_only=True)
    got = model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_load_sharded_refuses_a_directory_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no sharded checkpoint in .* \(missing \.metadata\)"):
        load_sharded(tmp_path, Swinv2ForImageClassification(CONFIG))


def test_checkpointing_selected_stages_only() -> None:
    model = Swinv2ForImageClassification(CONFIG)
    checkpoint_stages(model, (1,))
    assert [stage.gradient_checkpointing for stage in model.swinv2.encoder.layers] == [False, True]
    model.train()
    images = torch.randn(2, 3, 32, 32)
    model(images).logits.sum().backward()  # runs with one stage recomputed
    with pytest.raises(InputError, match=r"stages \[2\] do not exist: the model has 2 stages"):
        checkpoint_stages(model, (0, 2))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fsdp_precision": "fp16"}, r"fsdp_precision must be one of \['fp32', 'bf16'\]; got 'fp16'"),
        ({"fsdp_precision": "bf16"}, "fsdp_precision 'bf16' needs fsdp"),
        ({"zero": True, "fsdp": True}, "zero is for DDP; fsdp already shards"),
        ({"gradient_checkpointing_stages": (-1,)}, "gradient_checkpointing_stages must be a non-empty tuple"),
        (
            {"gradient_checkpointing_stages": (0,), "gradient_checkpointing": True},
            "give it or gradient_checkpointing_stages",
        ),
    ],
)
def test_sharding_settings_are_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrainConfig(data="digits", model="m", out="o", steps=1, **fields)  # type: ignore[arg-type]


def test_swinv2_train_with_zero_steps_like_one_process(source: Path, tmp_path: Path) -> None:
    """`swinv2 train --zero --checkpointing-stages 0` under torchrun (2 gloo processes, batch 4 each) ends
    within 1e-5 of one process at batch 8, and writes its checkpoints (with the whole optimiser state)."""
    single, double = tmp_path / "single", tmp_path / "double"
    common = {"data": "digits", "model": str(source), "lr": 1e-3, "steps": 4}
    train(TrainConfig(**common, out=str(single), batch_size=8))  # type: ignore[arg-type]
    command = ["-m", "swinv2", "train", "digits", "--model", str(source), "--lr", "1e-3", "--steps", "4"]
    options = [
        "--out",
        str(double),
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
        "--zero",
        "--checkpointing-stages",
        "0",
    ]
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", *command, *options],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    expected, got = (load_file(run / "model" / "model.safetensors") for run in (single, double))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    state = torch.load(double / "checkpoint" / "training_state.pt", weights_only=True)
    assert len(state["optimizer"]["state"]) == len(expected)  # every parameter's moments, not one share


@pytest.mark.slow
def test_swinv2_train_with_bf16_fsdp_runs_and_saves_fp32(source: Path, tmp_path: Path) -> None:
    """`swinv2 train --fsdp --fsdp-precision bf16` under torchrun (2 gloo processes): the steps and the
    held-out evaluation run, and the saved model and checkpoint are the fp32 master weights."""
    run = tmp_path / "run"
    command = ["-m", "swinv2", "train", "digits", "--model", str(source), "--steps", "2", "--batch-size", "4"]
    done = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            *command,
            "--out",
            str(run),
            "--fsdp",
            "--fsdp-precision",
            "bf16",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for path in (run / "model" / "model.safetensors", run / "checkpoint" / "model.safetensors"):
        weights = load_file(path)
        assert {w.dtype for w in weights.values()} == {torch.float32}
        assert all(bool(w.isfinite().all()) for w in weights.values())
    before = load_file(source / "model.safetensors")
    after = load_file(run / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in after if k in before)  # it trained


def test_a_zero_run_alone_saves_and_resumes_the_optimiser_in_torchs_format(source: Path, tmp_path: Path) -> None:
    """One process with `zero`: a plain optimiser whose checkpoint is in the format ZeRO consolidates to
    (integer keys), so that the run resumes alone or under torchrun with ZeRO."""
    config = TrainConfig(data="digits", model=str(source), out=str(tmp_path / "run"), steps=2, batch_size=16, zero=True)
    train(config)
    state = torch.load(tmp_path / "run" / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["optimizer"]["state"] and all(isinstance(k, int) for k in state["optimizer"]["state"])
    assert train(TrainConfig(**{**vars(config), "resume": True})).steps == 2

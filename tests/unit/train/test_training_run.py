"""The training run end to end: exact resume after SIGKILL, torchrun equivalence, refusals, and a model
that transformers loads. Runs through the real `swinv2` entry point where the issue asks for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swinv2 import Swinv2ForImageClassification
from swinv2.train.checkpoint import ResumeError
from swinv2.train.trainer import TrainConfig, train

PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _train_command(source: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "swinv2", "train", "digits", "--model", str(source), "--out", str(out), "--lr", "1e-3", *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_parameters(source: Path, tmp_path: Path) -> None:
    """SIGKILL after the first checkpoint, then --resume: bit for bit the uninterrupted run's parameters
    (CPU, fp32, stochastic depth on so that the random state matters)."""
    options = ("--steps", "12", "--batch-size", "16", "--checkpoint-every", "3", "--drop-path", "0.2")
    whole = tmp_path / "whole"
    subprocess.run([PYTHON, *_train_command(source, whole, *options)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([PYTHON, *_train_command(source, killed, *options)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoint").is_dir() and not (killed / "model").exists()
    progress = torch.load(killed / "checkpoint" / "training_state.pt", weights_only=True)["progress"]
    assert 0 < progress["step"] < 12
    resumed = subprocess.run(
        [PYTHON, *_train_command(source, killed, *options, "--resume")], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _weights(whole), _weights(killed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no training step logged twice


def test_two_processes_at_batch_4_step_like_one_at_batch_8(source: Path, tmp_path: Path) -> None:
    """torchrun --nproc_per_node=2 (gloo, CPU) at per-process batch 4 equals one process at batch 8 with
    DDP. With FSDP the same holds through a stop and a resume on one process:
    tests/unit/train/test_training_stops.py."""
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run(
        [PYTHON, *_train_command(source, single, "--steps", "4", "--batch-size", "8")], check=True, capture_output=True
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            *_train_command(source, double, "--steps", "4", "--batch-size", "4", "--checkpoint-every", "2"),
        ],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 4 steps") == 1  # only rank 0 reports
    expected, got = _weights(single), _weights(double)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    saved = load_file(double / "checkpoint" / "model.safetensors")  # the whole model, not one shard
    assert saved.keys() == expected.keys() and all(saved[k].shape == expected[k].shape for k in saved)


def test_resume_refuses_another_runs_settings_and_a_missing_checkpoint(source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16)
    train(config)
    with pytest.raises(ResumeError, match=r"holds a checkpoint of another run: lr \(checkpoint 0.0005, now 0.001\)"):
        train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16, lr=1e-3, resume=True))
    with pytest.raises(ResumeError, match="already holds a run; pass --resume"):
        train(config)
    with pytest.raises(ResumeError, match="no training checkpoint in"):
        train(TrainConfig(data="digits", model=str(source), out=str(tmp_path / "new"), steps=2, resume=True))


def test_a_trained_model_loads_in_transformers_with_equal_logits(source: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "run"
    train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16))
    ours = Swinv2ForImageClassification.from_pretrained(run / "model").eval()
    theirs = transformers.AutoModelForImageClassification.from_pretrained(run / "model").eval()
    assert theirs.config.id2label == {i: str(i) for i in range(10)}
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, theirs(pixels).logits, atol=1e-5, rtol=0)
    assert (run / "curves.png").stat().st_size > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["eval"]["images"] == 180


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        (dict(steps=None), "give the run's length as epochs or steps"),
        (dict(batch_size=0), "batch_size must be a positive int; got 0"),
        (dict(precision="fp8"), "precision must be one of ['fp32', 'bf16', 'fp16']; got 'fp8'"),
        (dict(ema=1.0), "ema must be a decay in (0, 1); got 1.0"),
    ],
)
def test_bad_settings_are_one_error_naming_them(changes: dict, phrase: str) -> None:
    from swinv2.io.errors import InputError

    fields = dict(data="digits", model="m", out="o", steps=1) | changes
    with pytest.raises(InputError) as caught:
        TrainConfig(**fields)
    assert phrase in str(caught.value)


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while checkpointing fails that save; the checkpoint before it stays whole."""
    import errno

    import swinv2.train.checkpoint as checkpoint

    run = tmp_path / "run"
    train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16))
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_training_checkpoint(
            run / "checkpoint", model_state={}, state={}, settings={}, progress=checkpoint.Progress(9, 9, 9)
        )
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_fine_tuning_at_a_new_window_saves_a_model_with_that_window(source: Path, tmp_path: Path) -> None:
    """The V2 transfer: train at another resolution and window; the source's windows are recorded."""
    run = tmp_path / "run"
    train(
        TrainConfig(
            data="digits", model=str(source), out=str(run), steps=2, batch_size=16, image_size=64, window_size=8
        )
    )
    model = Swinv2ForImageClassification.from_pretrained(run / "model")
    assert model.config.image_size == 64 and model.config.window_size == 8
    assert model.config.pretrained_window_sizes[:2] == (4, 4)
    processor = json.loads((run / "model" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 64}


def test_evaluate_command_prints_accuracy_and_a_confusion_matrix(source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16))
    done = subprocess.run(
        [PYTHON, "-m", "swinv2", "evaluate", "digits", "--model", str(run / "model"), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert report["images"] == 180 and len(report["confusion"]) == 10
    assert sum(map(sum, report["confusion"])) == 180 and 0 <= report["top1"] <= report["top5"] <= 1


def test_the_recipe_options_run_together(source: Path, tmp_path: Path) -> None:
    """EMA, bf16 autocast, accumulation, mixup/cutmix, layer decay, warm-up and gradient checkpointing in
    one short run: it finishes, the saved weights are the average's and finite, the run is resumable."""
    run = tmp_path / "run"
    result = train(
        TrainConfig(
            data="digits",
            model=str(source),
            out=str(run),
            steps=3,
            batch_size=8,
            accumulate=2,
            ema=0.9,
            precision="bf16",
            mixup=0.2,
            cutmix=1.0,
            layer_decay=0.8,
            warmup_steps=1,
            gradient_checkpointing=True,
        )
    )
    assert result.steps == 3
    saved = _weights(run)
    assert all(torch.isfinite(t).all() for t in saved.values())
    checkpoint = load_file(run / "checkpoint" / "ema.safetensors")
    for key, tensor in saved.items():
        torch.testing.assert_close(tensor, checkpoint[f"module.{key}"], atol=0, rtol=0, msg=key)


def test_a_run_in_another_thread_trains(source: Path, tmp_path: Path) -> None:
    """Signal handlers can only be set from the main thread: a run started from a worker thread (a
    notebook's, a service's) trains without one instead of failing."""
    import threading

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = train(
                TrainConfig(data="digits", model=str(source), out=str(tmp_path / "r"), steps=1, batch_size=16)
            )
        except Exception as err:  # reported below
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert "error" not in outcome, outcome.get("error")
    assert (tmp_path / "r" / "model" / "config.json").is_file()

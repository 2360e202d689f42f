"""Runs that stop early: a signal ends every process after the same step with a consistent checkpoint, and
the checkpoint resumes on another number of processes when the global batch stays the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swinv2.train.checkpoint import ResumeError
from swinv2.train.trainer import TrainConfig, train

PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _train_command(source: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "swinv2", "train", "digits", "--model", str(source), "--out", str(out), "--lr", "1e-3", *extra]


def _checkpoint_step(run: Path) -> int:
    return int(torch.load(run / "checkpoint" / "training_state.pt", weights_only=True)["progress"]["step"])


def _wait_for_checkpoint(run: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while not (run / "checkpoint").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert (run / "checkpoint").is_dir(), "the run wrote no checkpoint"


def test_an_fsdp_run_stopped_by_sigterm_resumes_on_one_process(source: Path, tmp_path: Path) -> None:
    """SIGTERM to the whole torchrun process group (what a cluster scheduler sends): both FSDP processes
    stop after the same step and the gathered checkpoint is saved; one process at the same global batch
    (8 = 2 x 4) resumes it to the parameters of an uninterrupted single-process run."""
    steps = ("--steps", "16")
    single, stopped = tmp_path / "single", tmp_path / "stopped"
    subprocess.run([PYTHON, *_train_command(source, single, *steps, "--batch-size", "8")], check=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node=2",
        *_train_command(source, stopped, *steps, "--batch-size", "4"),
    ]
    process = subprocess.Popen(
        [*command, "--checkpoint-every", "4", "--fsdp"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_checkpoint(stopped, process)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    step = _checkpoint_step(stopped)
    assert 4 <= step < 16, f"the run was not stopped mid-way (step {step})"
    assert f"stopped by SIGTERM after step {step} of 16" in stderr
    assert not (stopped / "model").exists()  # a stopped run publishes no model
    resumed = subprocess.run(
        [PYTHON, *_train_command(source, stopped, *steps, "--batch-size", "8", "--fsdp", "--resume")],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(single / "model" / "model.safetensors")
    got = load_file(stopped / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)


def test_ctrl_c_ends_the_run_after_its_step_with_a_checkpoint(source: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) on the command line: the step in progress finishes, the checkpoint is saved with
    it, one line says how to continue, and the exit status is 130."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [PYTHON, *_train_command(source, run, "--steps", "400", "--batch-size", "4", "--checkpoint-every", "2")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(run, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    step = _checkpoint_step(run)
    assert 2 <= step < 400
    lines = [line for line in stderr.splitlines() if line.startswith("swinv2 train:")]
    assert lines == [
        f"swinv2 train: stopped by SIGINT after step {step} of 400; its checkpoint is saved in "
        f"'{run / 'checkpoint'}': the same command with --resume continues it"
    ]
    assert "Traceback" not in stderr


def test_resume_refuses_another_global_batch_and_names_the_batch_that_fits(source: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=16))
    with pytest.raises(ResumeError) as caught:
        train(TrainConfig(data="digits", model=str(source), out=str(run), steps=2, batch_size=8, resume=True))
    assert "global batch of 16 (1 process(es) x 16); now 8 (1 process(es) x 8): resume with --batch-size 16" in str(
        caught.value
    )

"""How the `swinv2` command line fails: one line on stderr and exit 1 whatever goes wrong, the traceback
only with `--debug` / `SWINV2_DEBUG=1`, exit 2 on misuse, 130 on interrupt, and strict JSON output even
from a model whose weights are not finite.

In-process tests call `swinv2.cli.main` (fast, and a library function can be patched to fail); the
subprocess tests run the real entry point, where anything else written to stderr (a library's warning)
would break the one-line contract too.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import swinv2.cli.info
from swinv2 import Swinv2Config, Swinv2ForImageClassification
from swinv2.cli import DEBUG_VARIABLE, main

COMMAND = [sys.executable, "-m", "swinv2.cli"]
TINY = dict(image_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, num_labels=3)
ONE_LINE = "swinv2 info: error: unexpected RuntimeError: boom on two lines (run with --debug for details)"


def run_cli(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in (DEBUG_VARIABLE, "SWINV2_MEMORY_LIMIT")}
    environment.update(HF_HUB_OFFLINE="1", **env)
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, env=environment)


@pytest.fixture
def failing_info(monkeypatch: pytest.MonkeyPatch) -> None:
    """`swinv2 info` fails inside the library with an exception that is not one of ours."""

    def broken(reference: Any) -> Any:
        raise RuntimeError("boom\non two lines")

    monkeypatch.setattr(swinv2.cli.info, "resolve_model_source", broken)
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)


# --------------------------------------------------------------------- unexpected exceptions, in process
def test_unexpected_exception_is_one_line_without_traceback(failing_info: None, capsys) -> None:
    assert main(["info", "some-model"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [ONE_LINE]
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("argv", [["--debug", "info", "some-model"], ["info", "some-model", "--debug"]])
def test_debug_flag_adds_the_traceback(failing_info: None, capsys, argv: list[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: boom" in err
    assert "in broken" in err  # the frame that raised
    assert err.splitlines()[-1] == ONE_LINE


def test_debug_environment_variable_adds_the_traceback(
    failing_info: None, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    assert main(["info", "some-model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == ONE_LINE


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupted(reference: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(swinv2.cli.info, "resolve_model_source", interrupted)
    assert main(["info", "some-model"]) == 130
    assert capsys.readouterr().err.splitlines() == ["swinv2 info: interrupted"]


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [("--batch-size", "0", "expected a positive integer; got 0"), ("--top-k", "-1", "expected a positive integer")],
)
def test_bad_usage_exits_2(capsys, option: str, value: str, phrase: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["classify", "x.png", "--model", "m", f"{option}={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err
    assert phrase in err


# ------------------------------------------------------------------------------ the real entry point
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failures")
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(Swinv2Config(**TINY))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    model.save_pretrained(root / "nan-model")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text('{"embed_dim": 16,', encoding="utf-8")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "black.png")
    # a PNG whose header claims 10000 x 10000 pixels (correct CRC), refused under a 100 MB limit
    data = bytearray((root / "black.png").read_bytes())
    data[16:24] = struct.pack(">II", 10_000, 10_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (root / "liar.png").write_bytes(bytes(data))
    return root


def _refuse_non_finite(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def test_classify_json_with_non_finite_weights_is_strict_json(workspace: Path) -> None:
    done = run_cli("classify", workspace / "black.png", "--model", workspace / "nan-model", "--json", "--top-k", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0], parse_constant=_refuse_non_finite)
    assert record["path"] == str(workspace / "black.png")
    assert [p["score"] for p in record["predictions"]] == [None, None]
    assert record["warnings"] == [
        "non-finite value replaced by null at .predictions[0].score",
        "non-finite value replaced by null at .predictions[1].score",
    ]


@pytest.mark.parametrize("case", ["missing-model", "broken-config", "hostile-image"])
def test_failure_is_one_line_on_stderr(workspace: Path, case: str) -> None:
    image, model, env, phrase = {
        "missing-model": ("black.png", "absent", {}, f"no model directory at '{workspace / 'absent'}'"),
        "broken-config": (
            "black.png",
            "broken",
            {},
            f"cannot read config file '{workspace / 'broken' / 'config.json'}'",
        ),
        "hostile-image": (
            "liar.png",
            "nan-model",
            {"SWINV2_MEMORY_LIMIT": "100MB"},
            f"decoding image '{workspace / 'liar.png'}' (10000 x 10000 pixels) needs about",
        ),
    }[case]
    done = run_cli("classify", workspace / image, "--model", workspace / model, **env)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("swinv2 classify: error: ")
    assert phrase in lines[0]

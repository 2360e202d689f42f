"""The models reproduce recorded outputs (golden tensors), without transformers or timm.

Each `*.safetensors` file here was written by `regenerate.py` (run `python tests/golden/regenerate.py`
to rewrite them, only for an intended change of values): a tiny model's config (in the metadata),
its full state dict, the forward's inputs and the "eager" outputs. The model is rebuilt from the
config, loads the state dict with strict=True, and both "eager" and "auto" must give the recorded
outputs within 1e-5 (fp32).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import swinv2
from swinv2 import Swinv2Config

HERE = Path(__file__).resolve().parent
FILES = sorted(HERE.glob("*.safetensors"))
NAMES = [path.stem for path in FILES]
EXPECTED = {"classifier", "classifier_absolute_60x52", "masked_image_modeling", "backbone"}


def read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return metadata, load_file(str(path))


def section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}


def output_field(output: Any, name: str) -> torch.Tensor:
    """`output.<name>`, where `feature_maps.1` is `output.feature_maps[1]`."""
    field, _, index = name.partition(".")
    value = getattr(output, field)
    return value[int(index)] if index else value


def test_the_golden_files_are_there_and_small() -> None:
    assert set(NAMES) == EXPECTED, f"run `python tests/golden/regenerate.py`; found {NAMES}"
    for path in FILES:
        assert path.stat().st_size < 1_000_000, path


@pytest.mark.parametrize("implementation", ["eager", "auto"])
@pytest.mark.parametrize("name", NAMES)
def test_model_reproduces_the_recorded_outputs(name: str, implementation: str) -> None:
    metadata, tensors = read(HERE / f"{name}.safetensors")
    assert metadata["format"] == "1"
    config = Swinv2Config.from_dict(json.loads(metadata["config"]))
    model = getattr(swinv2, metadata["class"])(config).eval()
    model.load_state_dict(section(tensors, "state."), strict=True)
    model.set_attn_implementation(implementation)

    inputs = section(tensors, "input.")
    assert set(inputs) == set(json.loads(metadata["inputs"]))
    outputs = json.loads(metadata["outputs"])
    recorded = section(tensors, "output.")
    assert set(recorded) == set(outputs)
    with torch.no_grad():
        output = model(**inputs)
    for field in outputs:
        torch.testing.assert_close(
            output_field(output, field), recorded[field], atol=1e-5, rtol=0, msg=lambda m, f=field: f"{f}: {m}"
        )


def test_golden_files_need_neither_transformers_nor_timm() -> None:
    """The checks above, in a fresh interpreter where importing transformers or timm fails."""
    code = (
        "import sys; sys.modules.update(transformers=None, timm=None); import pytest; "
        f"raise SystemExit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(Path(__file__))!r}, "
        "'-k', 'not need_neither']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]

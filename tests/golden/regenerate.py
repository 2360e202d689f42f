"""Write the golden tensors that `tests/golden/test_golden.py` checks the models against.

Regenerate them, from the repository root, with:

    python tests/golden/regenerate.py

and only when a change of the models' values is intended (say why in the commit): the files pin the
numbers of the "eager" implementation, so a change of numerics shows up even where transformers and
timm are absent or have moved on.

Each `<name>.safetensors` holds, for one fixed-seed, perturbed tiny model:
- `input.<argument>`: the forward's tensor arguments (pixel values, labels, the SimMIM mask);
- `state.<key>`: the model's full `state_dict()` (transformers' names);
- `output.<field>`: the eager outputs (`feature_maps.<i>` for the backbone's maps);
and in its metadata `class` (the swinv2 model class), `config` (the config JSON), `inputs`, `outputs`
(the names, in order), `format` and the torch version that wrote it. Every file stays well under 1 MB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/helpers.py
sys.path.insert(0, str(HERE.parents[1] / "src"))  # run from a checkout without installing

import swinv2  # noqa: E402
from helpers import perturb_  # noqa: E402
from swinv2 import Swinv2Config  # noqa: E402

FORMAT = "1"
MAX_BYTES = 1_000_000

# The tiny two-stage shape of tests/helpers.py `tiny_config`, written out so that the records do not
# move when the helpers do: 4 px patches, width 16 then 32, window 4 (shifted blocks, patch merging).
TINY: dict[str, Any] = dict(
    image_size=64, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, drop_path_rate=0.0
)


def pixels(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def cases() -> list[dict[str, Any]]:
    """(name, class, config, inputs, output fields) of each golden file."""
    mask = torch.rand(2, 16 * 12, generator=torch.Generator().manual_seed(3)) < 0.5  # a 16x12 patch grid
    return [
        dict(
            name="classifier",
            cls="Swinv2ForImageClassification",
            config=dict(TINY, num_labels=3),
            inputs=dict(pixel_values=pixels(2, 64, 64, seed=0), labels=torch.tensor([0, 2])),
            outputs=["logits", "loss"],
        ),
        dict(
            # absolute positions on a non-square grid (15x13 patches) that is no multiple of the window
            name="classifier_absolute_60x52",
            cls="Swinv2ForImageClassification",
            config=dict(TINY, image_size=[60, 52], use_absolute_embeddings=True, num_labels=3),
            inputs=dict(pixel_values=pixels(2, 60, 52, seed=1), labels=torch.tensor([1, 0])),
            outputs=["logits", "loss"],
        ),
        dict(
            # two stages downsample by 4 * 2 = 8: the decoder's stride
            name="masked_image_modeling",
            cls="Swinv2ForMaskedImageModeling",
            config=dict(TINY, encoder_stride=8),
            inputs=dict(pixel_values=pixels(2, 64, 48, seed=2), bool_masked_pos=mask),
            outputs=["reconstruction", "loss"],
        ),
        dict(
            name="backbone",
            cls="Swinv2Backbone",
            config=dict(TINY, out_features=["stem", "stage1", "stage2"]),
            inputs=dict(pixel_values=pixels(2, 56, 40, seed=4)),
            outputs=["feature_maps.0", "feature_maps.1", "feature_maps.2"],
        ),
    ]


def output_field(output: Any, name: str) -> torch.Tensor:
    """`output.<name>`, where `feature_maps.1` is `output.feature_maps[1]`."""
    field, _, index = name.partition(".")
    value = getattr(output, field)
    return value[int(index)] if index else value


def build(case: dict[str, Any], seed: int) -> torch.nn.Module:
    """The case's model, fixed-seed initialised then perturbed, in eval mode with the eager implementation."""
    config = Swinv2Config.from_dict(case["config"])
    torch.manual_seed(seed)
    model = getattr(swinv2, case["cls"])(config)
    perturb_(model, seed=seed)
    model.set_attn_implementation("eager")
    return model.eval()


def write(case: dict[str, Any], seed: int) -> Path:
    model = build(case, seed)
    with torch.no_grad():
        output = model(**case["inputs"])
    tensors = {f"input.{key}": value for key, value in case["inputs"].items()}
    tensors |= {f"state.{key}": value for key, value in model.state_dict().items()}
    tensors |= {f"output.{name}": output_field(output, name) for name in case["outputs"]}
    tensors = {key: value.detach().clone().contiguous() for key, value in tensors.items()}
    metadata = {
        "format": FORMAT,
        "class": case["cls"],
        "config": model.config.to_json_string(),
        "inputs": json.dumps(list(case["inputs"])),
        "outputs": json.dumps(case["outputs"]),
        "implementation": "eager",
        "torch": torch.__version__,
    }
    path = HERE / f"{case['name']}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise SystemExit(f"{path} is {size} bytes; keep golden files under {MAX_BYTES}")
    return path


def main() -> None:
    torch.set_num_threads(1)
    for seed, case in enumerate(cases()):
        path = write(case, seed)
        print(f"wrote {path.relative_to(HERE.parents[1])} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

"""Where a `from_pretrained` name points: a local directory, or a Hugging Face Hub id.

The Hub is optional: `huggingface_hub` is imported only when a name is not a local path, and any
failure (not installed, offline, unknown id) becomes one error that names the local-path alternative.
"""

from __future__ import annotations

import os
from pathlib import Path

# Files a model directory may hold; the Hub download fetches only these.
_HUB_PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json", "*.bin"]


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """Return a local directory for `name_or_path`, downloading a Hub id if needed.

    Raises:
        FileNotFoundError: `name_or_path` is neither a local directory nor a reachable Hub id.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists():
        raise FileNotFoundError(f"'{name}' is a file; from_pretrained expects a model directory")
    looks_like_hub_id = name.count("/") <= 1 and not name.startswith((".", "/", "~")) and name.strip() == name
    hint = (
        "pass a local directory holding config.json and model.safetensors instead "
        "(for example one written by save_pretrained), or check the name"
    )
    if not looks_like_hub_id:
        raise FileNotFoundError(f"no model directory at '{name}'; {hint}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"'{name}' is not a local directory, and huggingface_hub is not installed to fetch it from "
            f"the Hub (pip install huggingface_hub); {hint}"
        ) from None
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # network errors, unknown repos, offline mode: all one message
        raise FileNotFoundError(
            f"cannot fetch '{name}' from the Hugging Face Hub ({type(err).__name__}: {err}); {hint}"
        ) from None

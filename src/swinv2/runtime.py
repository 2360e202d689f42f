"""Run an exported ONNX classifier with onnxruntime, without the model code: the graph, plus the labels
and preprocessing that `swinv2.export.save_onnx` stored in the file's metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swinv2.io.errors import InputError
from swinv2.preprocess import ImageInput, Swinv2ImageProcessor, image_list

INPUT_NAME = "pixel_values"
#: Metadata keys of an exported ONNX file.
CONFIG_KEY, PREPROCESSING_KEY = "swinv2.config", "swinv2.preprocessing"
LABELS_KEY, CLASS_KEY = "swinv2.labels", "swinv2.class"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata an exported file carries, parsed: `config`, `labels` ({int: name}), `preprocessing`
    (None where none was stored) and `class`.

    Raises:
        InputError: not a readable ONNX file, or one without swinv2's metadata.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except OSError as err:
        raise InputError(f"cannot read ONNX file '{path}': {err}") from None
    except Exception as err:  # protobuf's DecodeError and onnx's own: not an ONNX file
        raise InputError(f"cannot read ONNX file '{path}': not an ONNX model ({type(err).__name__})") from None
    raw = {entry.key: entry.value for entry in proto.metadata_props}
    missing = [key for key in (CONFIG_KEY, LABELS_KEY, CLASS_KEY) if key not in raw]
    if missing:
        raise InputError(f"'{path}' is not an ONNX file written by swinv2 export (no {', '.join(missing)} metadata)")
    try:
        return {
            "config": json.loads(raw[CONFIG_KEY]),
            "labels": {int(k): str(v) for k, v in json.loads(raw[LABELS_KEY]).items()},
            "preprocessing": json.loads(raw[PREPROCESSING_KEY]) if PREPROCESSING_KEY in raw else None,
            "class": raw[CLASS_KEY],
        }
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"'{path}' has damaged swinv2 metadata ({err})") from None


class OnnxClassifier:
    """An exported classifier in onnxruntime: `classifier(images, top_k)` gives what `swinv2.pipeline.classify`
    gives, `[[{"label": ..., "score": ...}, ...], ...]`.

    Example:
        >>> OnnxClassifier("tiny.onnx")(["cat.jpg"], top_k=3)
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime

        self.path = Path(path)
        info = read_metadata(self.path)
        if info["class"] != "Swinv2ForImageClassification":
            raise InputError(f"'{path}' holds a {info['class']}, not a classifier")
        self.labels: dict[int, str] = info["labels"]
        size = info["config"].get("image_size", 256)
        height, width = (size, size) if isinstance(size, int) else size
        fields = info["preprocessing"] or {"size": {"height": height, "width": width}}
        known = Swinv2ImageProcessor.__dataclass_fields__
        self.processor = Swinv2ImageProcessor(**{k: v for k, v in fields.items() if k in known})
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        """(B, classes) logits of (B, 3, H, W) float32 pixel values (in pieces of the graph's batch when fixed)."""
        step = self.fixed_batch or len(pixel_values)
        parts = []
        for start in range(0, len(pixel_values), step):
            piece = pixel_values[start : start + step]
            short = step - len(piece)
            if short:  # a fixed-batch graph: pad the last piece and drop the padding after
                piece = np.concatenate([piece, np.repeat(piece[-1:], short, axis=0)])
            parts.append(self.session.run(None, {INPUT_NAME: piece})[0][: step - short])
        return np.concatenate(parts)

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], top_k: int = 5, batch_size: int = 8
    ) -> list[list[dict[str, Any]]]:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k}")
        batch = image_list(images)
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(batch), batch_size):
            pixels = self.processor(batch[start : start + batch_size]).pixel_values.numpy()
            logits = self.logits(pixels).astype(np.float64)
            probabilities = np.exp(logits - logits.max(-1, keepdims=True))
            probabilities /= probabilities.sum(-1, keepdims=True)
            for row in probabilities:
                order = np.argsort(-row, kind="stable")[: min(top_k, len(row))]
                results.append([{"label": self.labels.get(int(i), str(int(i))), "score": float(row[i])} for i in order])
        return results

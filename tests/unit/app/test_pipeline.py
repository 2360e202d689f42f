"""Pipelines: classify and extract_features agree with running the model by hand."""

from __future__ import annotations

import pytest
import skimage.data
import torch
from PIL import Image

from helpers import perturb_, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2ImageProcessor
from swinv2.pipeline import classify, extract_features, load_model

IMAGES = [Image.fromarray(skimage.data.astronaut()), skimage.data.coffee(), Image.fromarray(skimage.data.camera())]


@pytest.fixture(scope="module")
def model() -> Swinv2ForImageClassification:
    torch.manual_seed(0)
    return perturb_(Swinv2ForImageClassification(tiny_config(id2label={0: "a", 1: "b", 2: "c", 3: "d"}))).eval()


def test_classify_equals_the_model_on_processed_pixels(model: Swinv2ForImageClassification) -> None:
    results = classify(IMAGES, model, top_k=2, batch_size=2)
    pixels = Swinv2ImageProcessor(size={"height": 64, "width": 64})(IMAGES).pixel_values
    with torch.no_grad():
        probs = model(pixels).logits.softmax(-1)
    for row, predictions in zip(probs, results, strict=True):
        top = row.topk(2)
        assert [p["label"] for p in predictions] == [model.config.id2label[i] for i in top.indices.tolist()]
        torch.testing.assert_close(torch.tensor([p["score"] for p in predictions]), top.values, atol=1e-6, rtol=0)


def test_classify_under_bf16_autocast_keeps_the_ranking(model: Swinv2ForImageClassification) -> None:
    exact = classify(IMAGES[:1], model, top_k=4)
    low = classify(IMAGES[:1], model, top_k=4, dtype="bfloat16")
    assert abs(exact[0][0]["score"] - low[0][0]["score"]) < 0.05


def test_extract_features_pooled_and_stages(model: Swinv2ForImageClassification) -> None:
    features = extract_features(IMAGES, model, stages=["stem", "stage1"], batch_size=2)
    pixels = Swinv2ImageProcessor(size={"height": 64, "width": 64})(IMAGES).pixel_values
    with torch.no_grad():
        expected = model.swinv2(pixels).pooler_output
    torch.testing.assert_close(features["pooled"], expected, atol=1e-5, rtol=0)
    assert features["stem"].shape == (3, 16, 16, 16) and features["stage1"].shape == (3, 16, 16, 16)
    with pytest.raises(ValueError, match="unknown stages"):
        extract_features(IMAGES, model, stages=["stage9"])


def test_variant_names_need_random_weights_explicitly() -> None:
    with pytest.raises(ValueError, match="no weights ship with swinv2"):
        load_model("swinv2-tiny-patch4-window8-256")
    built, processor = load_model("swinv2_tiny_window8_256", random_weights=True)
    assert built.num_parameters() > 28e6 and processor.size == {"height": 256, "width": 256}


def test_bad_arguments(model: Swinv2ForImageClassification) -> None:
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        classify(IMAGES[:1], model, top_k=0)
    with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float16"):
        classify(IMAGES[:1], model, dtype="int8")

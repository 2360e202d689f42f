"""PEFT's LoRA on our classifier behaves as on transformers' with the same weights: same adapted modules, same
initialisation, same loss, gradients and step, and `merge_and_unload` gives the same merged model."""

from __future__ import annotations

import pytest
import torch

from helpers import hf_twins, image_batch, tiny_config

peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

NUM_LABELS = 3
ATOL = 1e-5


def lora_config() -> peft.LoraConfig:
    return peft.LoraConfig(
        target_modules=["query", "value"],
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        bias="none",
        modules_to_save=["classifier"],  # a new task's head is trained in full
    )


def wrap(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # LoRA's A matrices are drawn at wrapping time
    return peft.get_peft_model(model, lora_config())


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def assert_close_dicts(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(theirs)
    for name, value in ours.items():
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


# "triton" needs CUDA and is "auto" elsewhere; the CPU covers the reference and the fused paths.
@pytest.mark.parametrize("attn_implementation", ["eager", "auto", "sdpa"])
def test_lora_train_step_and_merge_match_transformers(attn_implementation: str) -> None:
    theirs_base, ours_base = hf_twins("Swinv2ForImageClassification", tiny_config(num_labels=NUM_LABELS))
    ours_base.set_attn_implementation(attn_implementation)
    ours, theirs = wrap(ours_base), wrap(theirs_base)

    # the same modules are adapted, in the same order, with the same draws
    ours_lora, theirs_lora = trainable(ours), trainable(theirs)
    assert list(ours_lora) == list(theirs_lora)
    assert sum("lora_A" in n for n in ours_lora) == 2 * sum(tiny_config().depths)  # query and value, each block
    assert any(n.endswith("classifier.modules_to_save.default.weight") for n in ours_lora)
    for name, value in ours_lora.items():
        assert torch.equal(value, theirs_lora[name]), name
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()

    # LoRA's B starts at zero, so that A would get no gradient: give both the same non-zero B
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, value in ours_lora.items():
            if "lora_B" in name:
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
                theirs_lora[name].copy_(value)

    pixels = image_batch(2, 64, 64, seed=3)
    labels = torch.tensor([0, 2])
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        before_ours, before_theirs = ours(pixel_values=pixels).logits, theirs(pixel_values=pixels).logits
    torch.testing.assert_close(before_ours, before_theirs, rtol=0, atol=ATOL)

    # one training step each, same batch, same optimizer
    ours.train()
    theirs.train()
    losses = []
    for model, params in ((ours, ours_lora), (theirs, theirs_lora)):
        optimizer = torch.optim.SGD(params.values(), lr=0.1)
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=ATOL)
    for name, value in ours_lora.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(value.grad, theirs_lora[name].grad, rtol=0, atol=ATOL, msg=name)
    assert_close_dicts({n: p.detach() for n, p in ours_lora.items()}, {n: p.detach() for n, p in theirs_lora.items()})

    ours.eval()
    theirs.eval()
    with torch.no_grad():
        after_ours, after_theirs = ours(pixel_values=pixels).logits, theirs(pixel_values=pixels).logits
    torch.testing.assert_close(after_ours, after_theirs, rtol=0, atol=ATOL)
    assert not torch.allclose(after_ours, before_ours, rtol=0, atol=ATOL), "the step changed nothing"

    # merging folds B @ A into the projections and puts the trained head back: same model in both libraries
    merged_ours, merged_theirs = ours.merge_and_unload(), theirs.merge_and_unload()
    assert type(merged_ours).__name__ == "Swinv2ForImageClassification"
    assert not any("lora" in n or "modules_to_save" in n for n in merged_ours.state_dict())
    assert_close_dicts(merged_ours.state_dict(), merged_theirs.state_dict())
    with torch.no_grad():
        merged_logits_ours = merged_ours(pixel_values=pixels).logits
        merged_logits_theirs = merged_theirs(pixel_values=pixels).logits
    torch.testing.assert_close(merged_logits_ours, merged_logits_theirs, rtol=0, atol=ATOL)
    torch.testing.assert_close(merged_logits_ours, after_ours, rtol=0, atol=ATOL)

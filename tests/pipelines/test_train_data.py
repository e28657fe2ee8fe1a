"""The collated batch that training feeds the model, without Ray: what the padding mask may be dropped for."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.train.data import target_tokens, without_right_padding_mask
from sp_core.loading import load_llava_sp

PROMPTS = ["USER: <image>\nWhat colour is the shape? ASSISTANT: red",
           "USER: <image>\nHow many shapes are there? Is the square left of the triangle? ASSISTANT: two, yes",
           "USER: <image>\nWhere? ASSISTANT: left"]


def _right_padded_batch(model_dir) -> dict[str, torch.Tensor]:
    """Three image rows of different lengths, right-padded as pipelines.train.data.collate pads them."""
    _, processor = load_llava_sp(model_dir)
    images = [Image.new("RGB", (40 + 20 * i, 60), colour) for i, colour in enumerate(["red", "green", "blue"])]
    inputs = processor(images=images, text=PROMPTS, return_tensors="pt", padding="longest")
    mask = inputs["attention_mask"]
    assert bool(mask[:, 0].all()) and not bool(mask.all()), "the rows must be right-padded and of different lengths"
    labels = inputs["input_ids"].masked_fill(mask == 0, -100)
    return {"input_ids": inputs["input_ids"], "attention_mask": mask, "pixel_values": inputs["pixel_values"],
            "labels": labels}


def _summed_loss_and_gradients(model, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    inputs = {name: tensor for name, tensor in batch.items() if name != "labels"}
    logits = model(**inputs).logits
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_a_right_padded_batch_trains_the_same_without_its_mask(tiny_model_dir):
    model, _ = load_llava_sp(tiny_model_dir)
    model.train()
    model.requires_grad_(True)
    batch = _right_padded_batch(tiny_model_dir)
    assert target_tokens(batch["labels"]) > 0

    unmasked = without_right_padding_mask(batch)
    assert "attention_mask" not in unmasked and "attention_mask" in batch
    assert set(unmasked) == set(batch) - {"attention_mask"}
    masked_loss, masked_grads = _summed_loss_and_gradients(model, batch)
    unmasked_loss, unmasked_grads = _summed_loss_and_gradients(model, unmasked)

    assert unmasked_loss == pytest.approx(masked_loss, rel=1e-5)
    assert set(unmasked_grads) == set(masked_grads) and len(masked_grads) > 50
    # fp32 round-off only: another attention kernel sums in another order. The + 1e-3 is for gradients that are zero
    # but for round-off (attention's key biases: softmax ignores a shift that is the same for every key).
    off = {name: float((unmasked_grads[name] - gradient).norm() / (gradient.norm() + 1e-3))
           for name, gradient in masked_grads.items()}
    assert max(off.values()) < 1e-4, sorted(off.items(), key=lambda item: -item[1])[:3]


@pytest.mark.parametrize("mask", [[[0, 1, 1], [1, 1, 1]], [[1, 0, 1], [1, 1, 1]]], ids=["left-padded", "hole"])
def test_a_mask_that_is_not_right_padding_is_kept(mask):
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.tensor(mask)}
    assert without_right_padding_mask(batch) is batch


def test_an_unpadded_batch_loses_its_mask_and_a_batch_without_one_is_passed_through():
    unpadded = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    assert "attention_mask" not in without_right_padding_mask(unpadded)
    bare = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert without_right_padding_mask(bare) is bare

"""The paper's architecture without a GPU: parameter counts at full size on the meta device against the official
model's shapes, and bf16 against fp32 at the paper's widths with 2 layers per tower."""

from __future__ import annotations

import pytest
import torch

from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams
from sp_core.modeling import LlavaSPForConditionalGeneration
from sp_core.paper import paper_config

# The official model's parameters, from the shapes of its modules (official llava_arch.py, LLaVA-1.5 builder):
VISION, SPATIAL, TEXT, VOCAB = 1024, 512, 4096, 32000 + 1  # CLIP-L width, SFE/DFI width, Vicuna-7B width, +<image>
CLIP_L_336 = (VISION  # class embedding
              + 3 * 14 * 14 * VISION  # patch embedding (no bias)
              + 577 * VISION  # position embedding
              + 2 * 2 * VISION  # pre- and post-LayerNorm
              + 24 * (4 * (VISION * VISION + VISION) + 2 * 2 * VISION + VISION * 4096 + 4096 + 4096 * VISION + VISION))
VICUNA_7B = (2 * VOCAB * TEXT  # embeddings and lm_head
             + 32 * (4 * TEXT * TEXT + 3 * TEXT * 11008 + 2 * TEXT)  # attention, MLP, two RMSNorms per layer
             + TEXT)  # final norm
MM_PROJECTOR = VISION * TEXT + TEXT + TEXT * TEXT + TEXT  # mm_projector.0 and .2 (mlp2x_gelu)
SFE_CONVS = sum(SPATIAL * VISION * side * side for side in (4, 8, 12, 16, 20, 24))  # conv_4 ... conv_24, no bias
DFI = SPATIAL * VISION * 16 * 16 + 3 * (2 * SPATIAL + SPATIAL * SPATIAL + SPATIAL)  # conv_CM; q/k/v LayerNorm+Linear
SPATIAL_MLP = {"sp-cropping": 2 * SPATIAL * TEXT + TEXT, "sp-pooling": 2 * SPATIAL * TEXT}  # conv_linear.1


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("variant", ["sp-cropping", "sp-pooling", "llava-1.5"])
def test_parameter_counts_at_paper_size_match_the_official_model(variant):
    with torch.device("meta"):
        model = LlavaSPForConditionalGeneration(paper_config(variant))
    projector = model.projector
    assert _count(model.model.vision_tower) == CLIP_L_336 == 303_507_456
    assert _count(model.model.language_model) + _count(model.lm_head) == VICUNA_7B == 6_738_423_808
    assert _count(projector.linear_1) + _count(projector.linear_2) == MM_PROJECTOR == 20_979_712
    if variant == "llava-1.5":
        assert _count(projector) == MM_PROJECTOR
        assert model.config.image_tokens_per_image == 576
        return
    assert _count(projector.spatial_extractor) == SFE_CONVS == 763_363_328
    assert _count(projector.detail_integrator) == DFI == 135_008_768
    assert _count(projector.spatial_projector) == SPATIAL_MLP[variant]
    assert _count(projector) == MM_PROJECTOR + SFE_CONVS + DFI + SPATIAL_MLP[variant]
    assert model.config.image_tokens_per_image == 582 and model.config.dfi_grid_size == 5


@pytest.fixture(scope="module")
def reduced(tiny_tokenizer):
    """SP-Cropping at the paper's widths, 2 layers per tower, the tiny tokenizer's vocabulary."""
    config = paper_config("sp-cropping", llm_layers=2, vision_layers=2, vocab_size=len(tiny_tokenizer),
                          image_token_id=tiny_tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    return LlavaSPForConditionalGeneration(config).eval()


def _batch(model, tiny_tokenizer):
    text = tiny_tokenizer("USER: <image>\nWhere is the circle? ASSISTANT: left</s>", return_tensors="pt").input_ids
    image = model.config.image_token_id
    position = int((text[0] == image).nonzero())
    input_ids = torch.cat([text[:, :position], torch.full((1, model.config.image_tokens_per_image), image),
                           text[:, position + 1:]], dim=1)
    torch.manual_seed(1)
    return {"input_ids": input_ids, "pixel_values": torch.randn(1, 3, 336, 336),
            "labels": input_ids.masked_fill(input_ids == image, -100)}


def _loss_and_projector_grad(model, batch, dtype):
    model.to(dtype).requires_grad_(False)
    model.projector.requires_grad_(True)  # stage 1: the gradient runs back through the LLM into the projector
    outputs = model(**{**batch, "pixel_values": batch["pixel_values"].to(dtype)})
    outputs.loss.backward()
    grad = torch.cat([parameter.grad.float().flatten() for parameter in model.projector.parameters()])
    model.zero_grad(set_to_none=True)
    return outputs.loss.detach().float(), outputs.logits.detach().float(), grad


def test_bf16_forward_backward_and_generate_follow_fp32_at_paper_widths(reduced, tiny_tokenizer):
    batch = _batch(reduced, tiny_tokenizer)
    loss32, logits32, grad32 = _loss_and_projector_grad(reduced, batch, torch.float32)
    loss16, logits16, grad16 = _loss_and_projector_grad(reduced, batch, torch.bfloat16)
    # bf16 keeps 8 bits of mantissa: the loss within 1%, logits and gradients pointing the same way.
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
    assert torch.nn.functional.cosine_similarity(logits16.flatten(), logits32.flatten(), dim=0) > 0.999
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
    assert torch.isfinite(grad16).all()

    # Serving and evaluation in bf16: the generator casts pixels to the model's dtype and decodes with a KV cache.
    image_processor = LlavaSPImageProcessor(image_size=336)
    generator = LlavaSPGenerator(reduced.requires_grad_(False), tiny_tokenizer, image_processor)
    from PIL import Image

    request = GenerationRequest(turns=["<image>\nWhere is the circle?"], images=[Image.new("RGB", (320, 240), "red")],
                                sampling=SamplingParams(max_new_tokens=4, ignore_eos=True))
    [result] = generator.generate([request])
    assert reduced.dtype == torch.bfloat16 and result.completion_tokens == 4
    assert reduced.config.image_token_id not in result.token_ids

"""The paper's architecture as configs: LLaVA-SP on Vicuna-7B-v1.5 and CLIP-ViT-L/14-336 (arXiv 2507.00505).

The sizes are those of the released lmsys/vicuna-7b-v1.5 and openai/clip-vit-large-patch14-336 configs, with one
token added to the vocabulary for <image> (as llava-sp-init adds it). The configs build models on the meta device
(parameter counts), at reduced depth (a CPU check of the real widths) or whole with random weights (GPU benchmarks);
no weights are downloaded.
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, LlamaConfig

from sp_core.config import LlavaSPConfig

VICUNA_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
# The released models (paper Tab. 1 = Tab. 6 rows): both use the DFI with kernel 16; only cropping+DFI has a bias on
# the spatial MLP (official conv336_cropping_sfe_dfi vs conv336_adptive_pooling_fuse_49).
PAPER_VARIANTS: dict[str, dict[str, Any]] = {
    "llava-1.5": dict(sp_variant="none"),
    "sp-cropping": dict(sp_variant="cropping", sp_num_tokens=6, sp_dfi=True, sp_dfi_kernel=16, sp_projector_bias=True),
    "sp-pooling": dict(sp_variant="pooling", sp_num_tokens=6, sp_dfi=True, sp_dfi_kernel=16, sp_projector_bias=False),
}


def paper_config(variant: str, llm_layers: int | None = None, vision_layers: int | None = None,
                 vocab_size: int | None = None, image_token_id: int | None = None) -> LlavaSPConfig:
    """The paper's model of `variant` (a PAPER_VARIANTS key). Fewer layers, or a smaller vocabulary with its own
    <image> id (a test tokenizer's), keep every width."""
    if variant not in PAPER_VARIANTS:
        raise ValueError(f"unknown paper variant {variant!r}; allowed: {', '.join(PAPER_VARIANTS)}")
    if image_token_id is None:
        image_token_id = VICUNA_7B["vocab_size"]  # <image> is appended to Vicuna's 32000 tokens
    text = dict(VICUNA_7B, vocab_size=vocab_size or VICUNA_7B["vocab_size"] + 1)
    if llm_layers is not None:
        text["num_hidden_layers"] = llm_layers
    vision = dict(CLIP_L_336)
    if vision_layers is not None:
        vision["num_hidden_layers"] = vision_layers
    return LlavaSPConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text),
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        **PAPER_VARIANTS[variant],
    )


__all__ = ["CLIP_L_336", "PAPER_VARIANTS", "VICUNA_7B", "paper_config"]

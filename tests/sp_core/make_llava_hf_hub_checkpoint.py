"""Writes data/llava_hf_hub/: a tiny LLaVA-1.5 checkpoint in the layout of the llava-hf models on the hub.

The hub's llava-hf checkpoints were written by transformers 4.x: keys `language_model.model.*`,
`language_model.lm_head.*`, `vision_tower.vision_model.*` and `multi_modal_projector.*`. Today's transformers reads
that layout but writes another (no `vision_model.`), so the file is made once by the real producer and stored. To
regenerate, in a virtual environment with torch and transformers 4.57 (not this project's environment):

    python tests/sp_core/make_llava_hf_hub_checkpoint.py

Sizes and special token ids are those of sp_core.tiny's tiny model and tokenizer (the test checks that they agree),
so the test can add that tokenizer and a processor beside these weights. Weights are float16 to keep the file small.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

OUTPUT = Path(__file__).parent / "data" / "llava_hf_hub"
VOCAB_SIZE, PAD_ID, BOS_ID, EOS_ID, IMAGE_ID = 580, 0, 1, 2, 3
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=336,
              patch_size=14)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=2048, tie_word_embeddings=False)


def main() -> None:
    assert transformers.__version__.startswith("4."), "run this with transformers 4.x, the hub's producer"
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION).to_dict(),
        text_config=LlamaConfig(vocab_size=VOCAB_SIZE, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                                **TEXT).to_dict(),
        image_token_index=IMAGE_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(torch.float16)
    model.save_pretrained(OUTPUT)
    print(f"wrote {OUTPUT} with transformers {transformers.__version__}")


if __name__ == "__main__":
    main()

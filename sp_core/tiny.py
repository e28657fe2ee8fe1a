"""Tiny random-weight LLaVA-SP models and a locally trained tokenizer, for tests, the demo and benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a small fixed corpus (so it encodes any
text without <unk>), the vision tower is a 2-layer CLIP at the paper's 336 px / patch 14 (so the grid is the
paper's 24 x 24 and every token count and DFI kernel of the paper applies), the LLM a 2-layer LLaMA. A saved tiny
model is loaded back through exactly the from_pretrained path that real weights use (sp_core.loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from sp_core.config import LlavaSPConfig
from sp_core.modeling import LlavaSPForConditionalGeneration, default_generation_config
from sp_core.processing import build_llava_sp_processor

UNK, BOS, EOS, IMAGE = "<unk>", "<s>", "</s>", "<image>"

# What the synthetic spatial data set and the chat templates say, so that they tokenize into few tokens.
_TINY_CORPUS = """
A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,
and polite answers to the user's questions. USER: ASSISTANT: Answer the question using a single word or phrase.
What colour is the shape? What shape is it? Where is the circle? Which quadrant? How many shapes are there?
Is the square left of the triangle? Is it above or below? Is it in the centre or on the border?
red green blue yellow purple orange white black grey cyan magenta brown pink
circle square triangle star diamond cross ring hexagon rectangle shape shapes
left right above below top bottom upper lower centre center border middle corner quadrant
yes no one two three four five six seven eight nine ten zero 0 1 2 3 4 5 6 7 8 9 10
The image shows a on the of and there is are in at with this that what which where how many
"""

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=336, patch_size=14)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False)


def build_tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on _TINY_CORPUS; BOS prepended like LLaMA's; pad = unk as in LLaVA."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([line for line in _TINY_CORPUS.splitlines() if line.strip()], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=2048,
        padding_side="right",
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, image_size: int = TINY_VISION["image_size"],
                **sp_options: Any) -> LlavaSPConfig:
    """A LlavaSPConfig with tiny towers; sp_options (sp_variant=..., sp_num_tokens=...) pass through.

    image_size below the paper's 336 gives a smaller patch grid (112 px: 8 x 8), which the tiny model learns from far
    faster; SP options must then fit that grid (LlavaSPConfig says which do not)."""
    if image_size < TINY_VISION["patch_size"] or image_size % TINY_VISION["patch_size"]:
        raise ValueError(f"image_size={image_size} must be a positive multiple of the patch size "
                         f"{TINY_VISION['patch_size']}")
    return LlavaSPConfig(
        vision_config=CLIPVisionConfig(**{**TINY_VISION, "image_size": image_size}),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TINY_TEXT,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        **sp_options,
    )


def build_tiny_model(
    seed: int = 0, image_size: int = TINY_VISION["image_size"], **sp_options: Any
) -> tuple[LlavaSPForConditionalGeneration, PreTrainedTokenizerFast]:
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer, image_size=image_size, **sp_options)
    torch.manual_seed(seed)
    model = LlavaSPForConditionalGeneration(config)
    model.generation_config = default_generation_config(config, tokenizer)
    return model.eval(), tokenizer


def save_tiny_model(directory: str | Path, seed: int = 0, image_size: int = TINY_VISION["image_size"],
                    **sp_options: Any) -> Path:
    """Build a tiny model and write model (safetensors), tokenizer and processor to `directory`."""
    directory = Path(directory)
    model, tokenizer = build_tiny_model(seed=seed, image_size=image_size, **sp_options)
    model.save_pretrained(directory)
    build_llava_sp_processor(model.config, tokenizer).save_pretrained(directory)
    return directory


__all__ = ["build_tiny_tokenizer", "tiny_config", "build_tiny_model", "save_tiny_model"]

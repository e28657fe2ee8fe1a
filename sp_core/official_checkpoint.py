"""Assemble a whole LlavaSPForConditionalGeneration from an official checkpoint's parts.

The official LoRA output holds only the projector/SP weights (non_lora_trainables.bin) and a LoRA adapter over
Vicuna; the language model and the CLIP tower come from their own checkpoints. We load those with the library's
from_pretrained, put them into a model skeleton built on the meta device (so a 7B model is never allocated twice),
merge the adapter as the official loader does, and save one safetensors model directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel

from sp_core.checkpoint_check import CLIP_TEXT_SIDE, load_exactly
from sp_core.modeling import LlavaSPForConditionalGeneration, default_generation_config
from sp_core.processing import build_llava_sp_processor, clip_image_processor
from sp_core.projector import LlavaSPProjector

if TYPE_CHECKING:
    from sp_core.convert import OfficialVariant

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"


def assemble_model(
    variant: OfficialVariant,
    projector: LlavaSPProjector,
    base_llm: str,
    vision_tower: str,
    adapter_dir: Path | None,
    official_config: dict,
    out: Path,
    dtype: torch.dtype,
) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(base_llm)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA pads with <unk>

    language_model = load_exactly(AutoModelForCausalLM, base_llm, dtype=torch.float32)
    vision_config = AutoConfig.from_pretrained(vision_tower)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIPConfig holds it
    config = variant.config(
        vision_config=vision_config,
        text_config=language_model.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=int(official_config.get("mm_vision_select_layer", -2)),
    )
    if config.grid_size != variant.grid_size:
        raise ValueError(
            f"vision tower {vision_tower} gives a {config.grid_size}x{config.grid_size} grid but the projector was "
            f"trained on {variant.grid_size}x{variant.grid_size}; use the 336 px CLIP the checkpoint was trained with"
        )
    if config.text_config.hidden_size != variant.text_width:
        raise ValueError(
            f"base LLM {base_llm} has width {config.text_config.hidden_size} but the projector outputs "
            f"{variant.text_width}; use the LLM the checkpoint was trained on"
        )

    with torch.device("meta"):
        model = LlavaSPForConditionalGeneration(config)
    # Swap whole submodules in: their buffers (rotary tables) come with them, nothing stays on meta.
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    vision = load_exactly(CLIPVisionModel, vision_tower, unused_prefixes=CLIP_TEXT_SIDE, dtype=torch.float32)
    model.model.vision_tower = vision.requires_grad_(False)
    model.model.multi_modal_projector = projector.float()
    if len(tokenizer) > model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    left_on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"parameters not filled from any checkpoint: {left_on_meta[:5]}")

    if adapter_dir is not None:
        model = merge_official_lora(model, adapter_dir)

    model.generation_config = default_generation_config(model.config, tokenizer)
    model.to(dtype).save_pretrained(out)
    build_llava_sp_processor(model.config, tokenizer, _image_processor(vision_tower, config)).save_pretrained(out)
    logger.info("converted official checkpoint -> %s", out)
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors, or a legacy .bin read with weights_only=True (tensors only, never arbitrary pickled code)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _image_processor(vision_tower: str, config) -> CLIPImageProcessorPil:
    try:
        return CLIPImageProcessorPil.from_pretrained(vision_tower)
    except OSError:
        return clip_image_processor(config.vision_config.image_size)


def official_adapter_key(key: str) -> str:
    """Official adapters wrap LlavaLlamaForCausalLM, whose LLaMA layers sit at `model.layers`; ours sit at
    `model.language_model.layers`."""
    prefix = "base_model.model.model."
    if key.startswith(prefix):
        return f"{prefix}language_model.{key[len(prefix):]}"
    return key


def merge_official_lora(model: LlavaSPForConditionalGeneration, adapter_dir: Path) -> LlavaSPForConditionalGeneration:
    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = settings.get("target_modules") or []
    if isinstance(targets, str):  # already a regex
        targets = [targets]
    names = "|".join(sorted({name.split(".")[-1] for name in targets}))
    lora_config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=0.0,
        bias=settings.get("bias", "none"),
        use_rslora=settings.get("use_rslora", False),
        target_modules=rf".*language_model.*\.({names})",
    )
    peft_model = get_peft_model(model, lora_config)
    weights = next((adapter_dir / name for name in ("adapter_model.safetensors", "adapter_model.bin")
                    if (adapter_dir / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{adapter_dir}: adapter_config.json but no adapter_model.safetensors/.bin")
    adapter_state = {official_adapter_key(key): value for key, value in read_state_dict(weights).items()}
    result = set_peft_model_state_dict(peft_model, adapter_state)
    if result.unexpected_keys:
        raise ValueError(f"LoRA adapter key {result.unexpected_keys[0]!r} matches no layer of the language model")
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing:
        raise ValueError(f"LoRA adapter is missing {missing[0]!r} ({len(missing)} LoRA tensors missing)")
    return peft_model.merge_and_unload()

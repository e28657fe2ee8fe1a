"""Assemble a whole LlavaSPForConditionalGeneration from an official checkpoint.

The official training (a LLaVA-1.5 fork) writes two layouts:
- LoRA (stage 2 with --lora_enable; also stage 1's projector file): the projector in non_lora_trainables.bin (or
  model.bin / mm_projector.bin) and a LoRA adapter over the base LLM; the language model and the CLIP tower come
  from their own checkpoints. The adapter is merged as the official loader merges it (builder.py).
- full (stage 2 without LoRA, and the released LLaVA-1.5 weights): LlavaLlamaForCausalLM's own save_pretrained,
  sharded .bin or safetensors, which holds the language model (`model.layers.*`, `lm_head`), the projector
  (`model.mm_projector.*`, `model.conv_*`), usually the CLIP tower (`model.vision_tower.vision_tower.*`) and the
  tokenizer. The LLM's config is the checkpoint's own config.json (a LlamaConfig with LLaVA's `mm_*` keys added).

Either way the parts go into a model skeleton on the meta device (a 7B model is never allocated twice), every tensor
is used exactly or the conversion fails naming the official key, and one safetensors model directory is saved.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import (
    CONFIG_MAPPING,
    AutoModel,
    AutoModelForCausalLM,
    PreTrainedConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_MAPPING,
)

from sp_core.checkpoint_check import NON_VISION_PARTS, load_exactly
from sp_core.init_model import (
    IMAGE_TOKEN,
    image_processor_of,
    load_tokenizer,
    vision_config_of,
)
from sp_core.modeling import LlavaSPForConditionalGeneration, default_generation_config
from sp_core.processing import build_llava_sp_processor
from sp_core.projector import LlavaSPProjector

if TYPE_CHECKING:
    from sp_core.convert import OfficialVariant

logger = logging.getLogger(__name__)

# What LlavaLlamaForCausalLM.save_pretrained writes, in the order transformers itself looks for them.
FULL_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                     "pytorch_model.bin")
# The official config's model_type -> the language model it wraps (LlavaLlamaForCausalLM is a LlamaForCausalLM).
OFFICIAL_LANGUAGE_MODELS = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral"}
# The language model's keys in a full checkpoint are its causal-LM class's own (LlavaLlamaForCausalLM subclasses it);
# the CLIP tower sits under CLIPVisionTower's attribute; the projector under the inner model (see sp_core.convert).
OFFICIAL_LANGUAGE_MODEL_KEY = re.compile(r"^(model\.(embed_tokens|layers|norm)\.|lm_head\.)")
OFFICIAL_TOWER_PREFIX = "model.vision_tower.vision_tower."


class OfficialFullCheckpointError(ValueError):
    """A full official checkpoint that does not fill the model exactly; the message names the official keys."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors, or a legacy .bin read with weights_only=True (tensors only, never arbitrary pickled code)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the full layout ------------------------------------------------------------------------------------------------


def full_weights_file(directory: Path) -> Path | None:
    """The weights (or shard index) of a full official checkpoint, None when the directory has none."""
    return next((directory / name for name in FULL_WEIGHT_FILES if (directory / name).is_file()), None)


def read_full_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a full checkpoint: one file, or the shards its index lists."""
    weights = full_weights_file(directory)
    if weights is None:
        raise FileNotFoundError(f"{directory}: none of {', '.join(FULL_WEIGHT_FILES)}")
    if not weights.name.endswith(".index.json"):
        return read_state_dict(weights)
    shards = sorted(set(json.loads(weights.read_text())["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not (directory / shard).is_file():
            raise FileNotFoundError(f"{directory}: shard {shard} listed in {weights.name} is missing")
        state.update(read_state_dict(directory / shard))
    return state


def official_text_config(official_config: dict, source: Path) -> PreTrainedConfig:
    """The language model's config inside the official config.json (LlavaConfig subclasses LlamaConfig)."""
    model_type = official_config.get("model_type")
    base_type = OFFICIAL_LANGUAGE_MODELS.get(model_type)
    if base_type is None:
        raise OfficialFullCheckpointError(
            f"{source}/config.json: model_type {model_type!r} is not an official LLaVA model; expected one of "
            f"{', '.join(OFFICIAL_LANGUAGE_MODELS)}"
        )
    config_class = CONFIG_MAPPING[base_type]
    known = set(config_class().to_dict()) - {"model_type", "architectures", "transformers_version", "_name_or_path"}
    text_config = config_class.from_dict({key: value for key, value in official_config.items() if key in known})
    text_config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING[config_class].__name__]
    return text_config


def split_full_checkpoint(
    state: dict[str, torch.Tensor], is_projector_key: Callable[[str], bool]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(projector, language model, vision tower) tensors of a full checkpoint: the projector and the language model
    under their official names, the tower without its CLIPVisionTower prefix. A key that is none of them is named in
    OfficialFullCheckpointError."""
    projector, language_model, vision, unknown = {}, {}, {}, []
    for key, tensor in state.items():
        if is_projector_key(key):
            projector[key] = tensor
        elif OFFICIAL_LANGUAGE_MODEL_KEY.match(key):
            language_model[key] = tensor
        elif key.startswith(OFFICIAL_TOWER_PREFIX):
            vision[key.removeprefix(OFFICIAL_TOWER_PREFIX)] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise OfficialFullCheckpointError(
            f"{len(unknown)} key(s) in the checkpoint belong to no part of a LLaVA-1.5 / LLaVA-SP model: "
            f"{', '.join(sorted(unknown)[:6])}"
        )
    return projector, language_model, vision


def assemble_full_model(
    variant: OfficialVariant,
    projector: LlavaSPProjector,
    language_model_state: dict[str, torch.Tensor],
    vision_state: dict[str, torch.Tensor],
    checkpoint: Path,
    vision_tower: str,
    official_config: dict,
    out: Path,
    dtype: torch.dtype,
) -> Path:
    """A full official checkpoint's parts -> one model directory. Each part loads through its own transformers class
    (whose key renaming rules read the checkpoint's transformers-4 names), exactly, in the output dtype: a 7B model
    is never held in float32 (mean-resizing the embeddings computes in float32 itself)."""
    tokenizer, _ = load_tokenizer(str(checkpoint))
    text_config = official_text_config(official_config, checkpoint)
    config = _model_config(variant, vision_tower, text_config, tokenizer, official_config, llm_source=str(checkpoint))
    language_model = load_exactly(MODEL_FOR_CAUSAL_LM_MAPPING[type(text_config)], None,
                                  label=f"{checkpoint} (its language model)",
                                  config=text_config, state_dict=language_model_state, dtype=dtype)
    if vision_state:
        vision = load_exactly(MODEL_MAPPING[type(config.vision_config)], None,
                              label=f"{checkpoint} (its vision tower, {OFFICIAL_TOWER_PREFIX}*)",
                              config=config.vision_config, state_dict=vision_state, dtype=dtype)
    else:
        logger.info("%s holds no vision tower: loading it from %s", checkpoint, vision_tower)
        vision = load_exactly(AutoModel, vision_tower, unused_prefixes=NON_VISION_PARTS, config=config.vision_config,
                              dtype=dtype)
    model = _assembled(config, language_model, vision, projector.to(dtype))
    _finish_and_save(model, tokenizer, vision_tower, out, dtype)
    return out


# ---- the LoRA layout ------------------------------------------------------------------------------------------------


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
    """An official projector (+ LoRA adapter) with the base LLM and the vision tower -> one model directory."""
    tokenizer, _ = load_tokenizer(base_llm)
    language_model = load_exactly(AutoModelForCausalLM, base_llm, dtype=torch.float32)
    config = _model_config(variant, vision_tower, language_model.config, tokenizer, official_config, llm_source=base_llm)

    vision = load_exactly(AutoModel, vision_tower, unused_prefixes=NON_VISION_PARTS, config=config.vision_config,
                          dtype=torch.float32)
    model = _assembled(config, language_model, vision, projector.float())
    if adapter_dir is not None:
        model = merge_official_lora(model, adapter_dir)
    _finish_and_save(model, tokenizer, vision_tower, out, dtype)
    return out


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


# ---- shared by both layouts -----------------------------------------------------------------------------------------


def _model_config(variant: OfficialVariant, vision_tower: str, text_config: PreTrainedConfig, tokenizer,
                  official_config: dict, llm_source: str):
    """The LlavaSPConfig of the converted model; a tower or LLM that does not fit the projector is named."""
    select = official_config.get("mm_vision_select_feature", "patch")
    if select != "patch":
        raise ValueError(f"mm_vision_select_feature {select!r}: LLaVA-SP reads the patch grid only ('patch')")
    config = variant.config(
        vision_config=vision_config_of(vision_tower),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=int(official_config.get("mm_vision_select_layer", -2)),
    )
    if config.grid_size != variant.grid_size:
        raise ValueError(
            f"vision tower {vision_tower} gives a {config.grid_size}x{config.grid_size} grid but the projector was "
            f"trained on {variant.grid_size}x{variant.grid_size}; use the 336 px CLIP the checkpoint was trained with"
        )
    if config.vision_config.hidden_size != variant.vision_width:
        raise ValueError(
            f"vision tower {vision_tower} has width {config.vision_config.hidden_size} but the projector reads "
            f"{variant.vision_width}; use the CLIP tower the checkpoint was trained with"
        )
    if config.text_config.hidden_size != variant.text_width:
        raise ValueError(
            f"base LLM {llm_source} has width {config.text_config.hidden_size} but the projector outputs "
            f"{variant.text_width}; use the LLM the checkpoint was trained on"
        )
    return config


def _assembled(config, language_model, vision, projector: LlavaSPProjector) -> LlavaSPForConditionalGeneration:
    """The parts swapped whole into a skeleton built on the meta device: their buffers (rotary tables) come with
    them, and nothing stays on meta."""
    with torch.device("meta"):
        model = LlavaSPForConditionalGeneration(config)
    model.model.language_model = getattr(language_model, language_model.base_model_prefix)
    model.lm_head = language_model.get_output_embeddings()
    model.model.vision_tower = vision.requires_grad_(False)
    model.model.multi_modal_projector = projector
    left_on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"parameters not filled from any checkpoint: {left_on_meta[:5]}")
    return model


def _finish_and_save(model: LlavaSPForConditionalGeneration, tokenizer, vision_tower: str, out: Path,
                     dtype: torch.dtype) -> None:
    """Rows for the added <image> token (mean-initialised, as llava-sp-init does), generation config, save."""
    if len(tokenizer) > model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.generation_config = default_generation_config(model.config, tokenizer)
    model.to(dtype).save_pretrained(out)
    image_processor, _ = image_processor_of(vision_tower, model.config.vision_config)
    build_llava_sp_processor(model.config, tokenizer, image_processor).save_pretrained(out)
    logger.info("converted official checkpoint -> %s", out)

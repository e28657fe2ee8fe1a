"""Load a LLaVA-SP model and its processor from a local directory or a hub id, the same way for tiny and real.

Our own model directories, llava-hf LLaVA-1.5 checkpoints in any layout transformers reads (the hub's, and what
today's transformers writes) and official checkpoints converted with `llava-sp-convert` all load here. Loading is
exact: a missing, unexpected or wrong-shaped tensor fails with LlavaSPCheckpointError naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, LlavaProcessor

from sp_core.checkpoint_check import LlavaSPCheckpointError
from sp_core.config import SP_OPTION_NAMES, LlavaSPConfig
from sp_core.modeling import LlavaSPForConditionalGeneration
from sp_core.processing import build_llava_sp_processor, placeholders_per_image


def load_llava_sp(
    name_or_path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    allow_new_spatial_modules: bool = False,
    **sp_options: Any,
) -> tuple[LlavaSPForConditionalGeneration, LlavaProcessor]:
    """Model (eval mode) and processor from a directory written by save_pretrained, or a hub id.

    A llava-hf checkpoint (model_type "llava") loads as the LLaVA-1.5 baseline (sp_variant "none"). sp_options
    (sp_variant="cropping", ...) override the checkpoint's LLaVA-SP options; turning a LLaVA-1.5 checkpoint into an SP
    variant also needs allow_new_spatial_modules=True, since its SP modules then start from their initialisation,
    and the processor is rebuilt to expand <image> to the variant's token count.

    Weights load from safetensors only (use_safetensors=True): a checkpoint that only has pickled .bin weights is
    refused rather than unpickled; convert it with `llava-sp-convert` first.
    """
    source = str(name_or_path)
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a model directory: config.json is missing")
    unknown = sorted(set(sp_options) - set(SP_OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown LLaVA-SP option(s) {', '.join(unknown)}; allowed: {', '.join(SP_OPTION_NAMES)}")
    model = LlavaSPForConditionalGeneration.from_pretrained(
        source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
        allow_new_spatial_modules=allow_new_spatial_modules, **sp_options,
    )
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    processor = _processor_for(model.config, processor, source, rebuild=bool(sp_options))
    return model.to(device).eval(), processor


def _processor_for(config: LlavaSPConfig, processor: LlavaProcessor, source: str, rebuild: bool) -> LlavaProcessor:
    """The saved processor if it expands <image> to the model's token count; rebuilt from its parts where the caller
    changed the SP options; otherwise an error, since every forward would fail on the placeholder count."""
    expected = config.image_tokens_per_image
    found = placeholders_per_image(processor, config)
    if found == expected:
        return processor
    if rebuild:
        return build_llava_sp_processor(config, processor.tokenizer, processor.image_processor)
    raise LlavaSPCheckpointError(
        f"checkpoint {source}: its processor expands <image> to {found} placeholders but the model takes "
        f"{expected} image tokens (sp_variant={config.sp_variant!r}); save the processor that matches the model "
        "(sp_core.processing.build_llava_sp_processor)"
    )

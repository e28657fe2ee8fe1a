"""Load a LLaVA-SP model and its processor from a local directory or a hub id, the same way for tiny and real."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaProcessor

from sp_core.modeling import LlavaSPForConditionalGeneration


def load_llava_sp(
    name_or_path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> tuple[LlavaSPForConditionalGeneration, LlavaProcessor]:
    """Model (eval mode) and processor from a directory written by save_pretrained, or a hub id.

    Weights load from safetensors only (use_safetensors=True): a checkpoint that only has pickled .bin weights is
    refused rather than unpickled; convert it with `llava-sp-convert` first.
    """
    source = str(name_or_path)
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a model directory: config.json is missing")
    model = LlavaSPForConditionalGeneration.from_pretrained(
        source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), processor

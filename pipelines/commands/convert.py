"""llava-sp-convert: an official LLaVA-SP checkpoint (full, LoRA or stage 1) -> one model directory in our format
(safetensors), loadable with sp_core.loading.load_llava_sp and servable with jobs/serve.py.

    llava-sp-convert checkpoint=./llava-sp-cropping-lora base_llm=lmsys/vicuna-7b-v1.5 \
        vision_tower=openai/clip-vit-large-patch14-336 out=./llava-sp-cropping-hf
    llava-sp-convert checkpoint=./llava-sp-pooling-full out=./llava-sp-pooling-hf     # a full (non-LoRA) output

How the official names map to ours: sp_core/convert.py.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic.dataclasses import dataclass

from pipelines.cli import parse_config, run_job
from pipelines.config import OPTIONS


@dataclass(config=OPTIONS)
class ConvertConfig:
    checkpoint: str = ""
    """The official output dir: full (pytorch_model*.bin / model*.safetensors), LoRA (adapter_* +
    non_lora_trainables.bin) or stage 1 (mm_projector.bin); or a projector file (required)."""
    base_llm: str = ""
    """LoRA and stage-1 checkpoints: the Vicuna-1.5 dir or hub id they were trained on."""
    vision_tower: str = ""
    """The CLIP tower's dir or hub id; "" = the checkpoint config's mm_vision_tower."""
    out: str = ""
    """The output directory (required)."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """The dtype of the saved weights."""

    def __post_init__(self) -> None:
        missing = [name for name in ("checkpoint", "out") if not getattr(self, name)]
        if missing:
            raise ValueError(f"set {', '.join(f'{name}=...' for name in missing)}")


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(ConvertConfig, argv, __doc__)
        from pathlib import Path

        import torch

        from sp_core.convert import convert_official_checkpoint

        out = convert_official_checkpoint(Path(config.checkpoint), config.base_llm or None,
                                          config.vision_tower or None, Path(config.out),
                                          dtype=getattr(torch, config.dtype))
        print(f"wrote {out}")
        return 0

    return run_job("llava-sp-convert", work)


if __name__ == "__main__":
    sys.exit(main())

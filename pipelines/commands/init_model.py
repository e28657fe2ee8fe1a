"""llava-sp-init: the stage-1 starting model of LLaVA-SP (or the LLaVA-1.5 baseline) from a base LLM and a vision
tower, as one safetensors directory that jobs/preprocess.py, jobs/pretrain.py and sp_core.loading open.

    llava-sp-init base_llm=lmsys/vicuna-7b-v1.5 vision_tower=openai/clip-vit-large-patch14-336 \
        out=/shared/llava-sp/models/init-sp-cropping sp_variant=cropping sp_dfi=true sp_dfi_kernel=16

What it changes in the sources, and why: sp_core/init_model.py.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Literal

from pydantic.dataclasses import dataclass

from pipelines.cli import parse_config, run_job
from pipelines.config import OPTIONS
from sp_core.sp_options import (
    SP_OPTION_FIELDS,
    SPChannels,
    SPDfi,
    SPDfiKernel,
    SPExtractor,
    SPNumTokens,
    SPOptions,
    SPProjectorBias,
    SPTransformerHeads,
    SPTransformerLayers,
    SPVariant,
)


@dataclass(config=OPTIONS)
class InitConfig:
    base_llm: str = ""
    """The causal LLM: a dir or hub id, e.g. lmsys/vicuna-7b-v1.5 (required)."""
    vision_tower: str = ""
    """The CLIP or SigLIP tower: a dir or hub id, e.g. openai/clip-vit-large-patch14-336 (required)."""
    out: str = ""
    """The new model directory; it must not exist, or be empty (required)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The dtype of the saved weights."""
    seed: int = 0
    """Seeds the projector's initialisation."""
    # The projector: LlavaSPConfig's options, with its defaults.
    sp_variant: SPVariant = SPOptions.sp_variant
    sp_num_tokens: SPNumTokens = SPOptions.sp_num_tokens
    sp_extractor: SPExtractor = SPOptions.sp_extractor
    sp_dfi: SPDfi = SPOptions.sp_dfi
    sp_dfi_kernel: SPDfiKernel = SPOptions.sp_dfi_kernel
    sp_channels: SPChannels = SPOptions.sp_channels
    sp_projector_bias: SPProjectorBias = SPOptions.sp_projector_bias
    sp_transformer_layers: SPTransformerLayers = SPOptions.sp_transformer_layers
    sp_transformer_heads: SPTransformerHeads = SPOptions.sp_transformer_heads

    def __post_init__(self) -> None:
        missing = [name for name in ("base_llm", "vision_tower", "out") if not getattr(self, name)]
        if missing:
            raise ValueError(f"set {', '.join(f'{name}=...' for name in missing)}")

    def sp_options(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name in SP_OPTION_FIELDS}


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(InitConfig, argv, __doc__)
        from pathlib import Path

        from sp_core.init_model import DTYPES, build_initial_model

        out = build_initial_model(config.base_llm, config.vision_tower, Path(config.out), dtype=DTYPES[config.dtype],
                                  seed=config.seed, **config.sp_options())
        print(f"wrote {out}")
        return 0

    return run_job("llava-sp-init", work)


if __name__ == "__main__":
    sys.exit(main())

"""The options of the LLaVA-SP projector in one place: names, types, allowed values, defaults and meaning.

`LlavaSPConfig` takes them (its defaults are SPOptions', and it checks the combinations that depend on the vision
tower's grid); llava-sp-init takes SPOptions as they are, the sweep's ablation rows and the demo use the option
types below with defaults of their own. Only pydantic here, so that configs and their --help load without torch.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

# Each option's type, with its meaning as Field(description=...): configs that use or extend these inherit it.
SPVariant = Annotated[Literal["none", "cropping", "pooling", "sliding_window"], Field(description=(
    "How the SFE views the patch grid: none is plain LLaVA-1.5 (no spatial tokens); cropping takes centred crops "
    "from the centre outwards; pooling average-pools the whole grid from coarse to fine; sliding_window cuts it into "
    "equal windows (the paper's Tab. 5 ablation)."))]
SPNumTokens = Annotated[int, Field(ge=1, description=(
    "Spatial tokens per image: 1, 3, 6 or 12 on the paper's 24 x 24 grid (6 in the paper)."))]
SPExtractor = Annotated[Literal["conv", "transformer"], Field(description=(
    "What reduces a view to one token: conv (a conv whose kernel covers the view, the paper's choice) or "
    "transformer (a small encoder-decoder with a learned query, the Tab. 3 ablation)."))]
SPDfi = Annotated[bool, Field(description="Add the Detail Feature Integrator.")]
SPDfiKernel = Annotated[int, Field(ge=2, description=(
    "Even kernel of the DFI's stride-2 conv over the grid; on 24 x 24, 16/12/8/4 give 5x5/7x7/9x9/11x11 keys."))]
SPChannels = Annotated[int | None, Field(ge=1, description=(
    "SFE/DFI channel width; null = half the vision width (512 for CLIP-L)."))]
SPProjectorBias = Annotated[bool, Field(description=(
    "Bias of the linear layer that maps spatial features to the LLM width (the official cropping+DFI model has one, "
    "the official pooling models do not)."))]
SPTransformerLayers = Annotated[int, Field(ge=1, description="Layers of the transformer extractor.")]
SPTransformerHeads = Annotated[int, Field(ge=1, description="Attention heads of the transformer extractor.")]


@dataclass(config=ConfigDict(extra="forbid"))
class SPOptions:
    sp_variant: SPVariant = "pooling"
    sp_num_tokens: SPNumTokens = 6
    sp_extractor: SPExtractor = "conv"
    sp_dfi: SPDfi = True
    sp_dfi_kernel: SPDfiKernel = 16
    sp_channels: SPChannels = None
    sp_projector_bias: SPProjectorBias = True
    sp_transformer_layers: SPTransformerLayers = 2
    sp_transformer_heads: SPTransformerHeads = 4


SP_OPTION_FIELDS: tuple[str, ...] = tuple(SPOptions.__dataclass_fields__)
SP_VARIANTS: tuple[str, ...] = get_args(get_args(SPVariant)[0])

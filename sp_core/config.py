"""LlavaSPConfig: the LLaVA config plus the options of the LLaVA-SP projector.

LLaVA-SP (arXiv 2507.00505) changes only the projector of LLaVA-1.5. Beside the usual two-layer MLP over the
grid x grid patch features it adds a Spatial Feature Extractor (SFE), which turns the patch grid into a
multi-scale pyramid and reduces each scale to one "visual spatial token", and an optional Detail Feature
Integrator (DFI), which lets those tokens attend to a strided conv map of the grid. Every size below is derived
from the vision and text configs, so the same options work for the paper's 24 x 24 grid and for tiny test models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from pydantic import ValidationError
from transformers import LlavaConfig

from sp_core.sp_options import SP_OPTION_FIELDS, SPOptions

# Vision towers whose sequence starts with a CLS token ("default" drops it) and those that are all patches ("full").
VISION_TOWERS_WITH_CLS = ("clip_vision_model",)
VISION_TOWERS_WITHOUT_CLS = ("siglip_vision_model",)


class LlavaSPConfigError(ValueError):
    """An impossible combination of LLaVA-SP options; the message lists every problem and the allowed values."""


@dataclass(frozen=True)
class SpatialSchedule:
    """Where each spatial token looks: one (height, width) view of the grid per token, in token order."""

    view_sizes: tuple[tuple[int, int], ...]  # per token: the extent of its view of the grid, in patches
    view_offsets: tuple[tuple[int, int], ...]  # per token: top-left corner (row, col) of the view; pooling: (0, 0)


@strict
class LlavaSPConfig(LlavaConfig):
    """LLaVA config with the LLaVA-SP projector options, all prefixed `sp_`: their meaning, allowed values and defaults
    are `sp_core.sp_options.SPOptions`; this class adds the checks that depend on the vision tower's grid.
    freeze_vision_tower: keep the vision tower's parameters frozen (LLaVA never trains it)."""

    model_type = "llava_sp"

    sp_variant: str = SPOptions.sp_variant
    sp_num_tokens: int = SPOptions.sp_num_tokens
    sp_extractor: str = SPOptions.sp_extractor
    sp_dfi: bool = SPOptions.sp_dfi
    sp_dfi_kernel: int = SPOptions.sp_dfi_kernel
    sp_channels: int | None = SPOptions.sp_channels
    sp_projector_bias: bool = SPOptions.sp_projector_bias
    sp_transformer_layers: int = SPOptions.sp_transformer_layers
    sp_transformer_heads: int = SPOptions.sp_transformer_heads
    freeze_vision_tower: bool = True

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> LlavaSPConfig:
        """transformers sets keyword overrides after construction, which would skip our validation and leave
        image_seq_length stale: SP options are put into the dict instead. A llava config (llava-hf LLaVA-1.5) holds
        no SP options and is the baseline, sp_variant "none", unless the caller asks for a variant."""
        config_dict = dict(config_dict)
        if "mm_vision_tower" in config_dict and "text_config" not in config_dict:
            raise LlavaSPConfigError(
                "this is an official LLaVA / LLaVA-SP checkpoint (LlavaLlamaForCausalLM: a LLaMA config with "
                "mm_vision_tower); convert it first: llava-sp-convert checkpoint=DIR out=NEW_DIR"
            )
        # Our model type, not the file's: transformers finds our classes' key renaming rules by it.
        if config_dict.pop("model_type", cls.model_type) == LlavaConfig.model_type:
            config_dict.setdefault("sp_variant", "none")
        config_dict.update({name: kwargs.pop(name) for name in list(kwargs) if name in SP_OPTION_NAMES})
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        problems = self._sp_problems()
        if problems:
            raise LlavaSPConfigError("Invalid LLaVA-SP config:\n  - " + "\n  - ".join(problems))
        self.image_seq_length = self.image_tokens_per_image

    # ---- sizes derived from the sub-configs -------------------------------------------------------------------

    @property
    def grid_size(self) -> int:
        """Patches per side of the vision tower's feature grid (24 for CLIP-L/14 at 336 px)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def vision_feature_width(self) -> int:
        """Channels of the selected vision features (several selected layers are concatenated)."""
        layers = 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)
        return self.vision_config.hidden_size * layers

    @property
    def spatial_channels(self) -> int:
        return self.sp_channels if self.sp_channels is not None else self.vision_feature_width // 2

    @property
    def num_spatial_tokens(self) -> int:
        return 0 if self.sp_variant == "none" else self.sp_num_tokens

    @property
    def image_tokens_per_image(self) -> int:
        """Placeholder tokens per image: spatial tokens first, then grid^2 patch tokens (582 in the paper)."""
        return self.num_spatial_tokens + self.grid_size**2

    @property
    def square_grid_strategy(self) -> str | None:
        """The vision_feature_select_strategy that leaves exactly the grid^2 patches: "default" drops CLIP's CLS
        token, "full" keeps SigLIP's patches as they are; None for a tower not listed here (then "default")."""
        if self.vision_config.model_type in VISION_TOWERS_WITH_CLS:
            return "default"
        if self.vision_config.model_type in VISION_TOWERS_WITHOUT_CLS:
            return "full"
        return None

    @property
    def dfi_grid_size(self) -> int:
        """Keys per side of the DFI's stride-2 conv map (5 for kernel 16 on a 24 x 24 grid)."""
        return (self.grid_size - self.sp_dfi_kernel) // 2 + 1

    @property
    def spatial_schedule(self) -> SpatialSchedule:
        return spatial_schedule(self.sp_variant, self.grid_size, self.sp_num_tokens)

    # ---- validation --------------------------------------------------------------------------------------------

    def _sp_problems(self) -> list[str]:
        try:  # each option on its own: type, allowed values, bounds
            SPOptions(**{name: getattr(self, name) for name in SP_OPTION_FIELDS})
        except ValidationError as error:
            return [f"{detail['loc'][0]}={detail['input']!r}: {detail['msg']}" for detail in error.errors()]
        problems: list[str] = []
        if self.sp_variant == "none":
            return problems
        grid = self.grid_size
        allowed_tokens = allowed_token_counts(self.sp_variant, grid)
        if self.sp_num_tokens not in allowed_tokens:
            problems.append(
                f"sp_num_tokens={self.sp_num_tokens} is not possible for sp_variant={self.sp_variant!r} on a "
                f"{grid}x{grid} grid; allowed: {', '.join(map(str, allowed_tokens))}"
            )
        if self.sp_dfi:
            allowed_kernels = allowed_dfi_kernels(grid)
            if self.sp_dfi_kernel not in allowed_kernels:
                problems.append(
                    f"sp_dfi_kernel={self.sp_dfi_kernel} is not possible on a {grid}x{grid} grid (even, at most the "
                    f"grid); allowed: {', '.join(map(str, allowed_kernels))}"
                )
        strategy = self.square_grid_strategy or "default"
        if self.vision_feature_select_strategy != strategy:
            problems.append(
                f"vision_feature_select_strategy={self.vision_feature_select_strategy!r}: LLaVA-SP needs the square "
                f"patch grid without a CLS token; allowed for a {self.vision_config.model_type} tower: {strategy!r}"
            )
        if self.sp_extractor == "transformer" and self.spatial_channels % self.sp_transformer_heads != 0:
            problems.append(
                f"sp_transformer_heads={self.sp_transformer_heads} must divide the SFE width {self.spatial_channels}"
            )
        return problems


# Every option LlavaSPConfig adds to LlavaConfig, for whatever takes them by name (load_llava_sp, llava-sp-init).
SP_OPTION_NAMES = (*SP_OPTION_FIELDS, "freeze_vision_tower")


# ---- the schedule of views, derived from the grid size ------------------------------------------------------------


def allowed_token_counts(variant: str, grid: int) -> list[int]:
    """Token counts whose views tile the grid evenly: scales grow in equal steps grid/n up to the whole grid."""
    divisors = [n for n in range(1, grid + 1) if grid % n == 0]
    if variant == "cropping":
        # A centred crop needs an even margin on each side, so the step grid/n must be even (or the crop the grid).
        return [n for n in divisors if n == 1 or (grid // n) % 2 == 0]
    return divisors


def allowed_dfi_kernels(grid: int) -> list[int]:
    return list(range(2, grid + 1, 2))


def _window_layout(num_windows: int) -> tuple[int, int]:
    """(rows, cols) of the sliding-window layout: the most square factorisation with rows <= cols."""
    rows = max(r for r in range(1, math.isqrt(num_windows) + 1) if num_windows % r == 0)
    return rows, num_windows // rows


def spatial_schedule(variant: str, grid: int, num_tokens: int) -> SpatialSchedule:
    """The view of each spatial token. Paper, grid 24, 6 tokens: sides 4, 8, 12, 16, 20, 24 (crop or pool)."""
    if variant in ("cropping", "pooling"):
        step = grid // num_tokens
        sides = [step * i for i in range(1, num_tokens + 1)]
        sizes = tuple((side, side) for side in sides)
        if variant == "cropping":
            offsets = tuple(((grid - side) // 2, (grid - side) // 2) for side in sides)
        else:
            offsets = tuple((0, 0) for _ in sides)
        return SpatialSchedule(sizes, offsets)
    if variant == "sliding_window":
        rows, cols = _window_layout(num_tokens)
        height, width = grid // rows, grid // cols
        offsets = tuple((r * height, c * width) for r in range(rows) for c in range(cols))
        return SpatialSchedule(tuple((height, width) for _ in offsets), offsets)
    return SpatialSchedule((), ())


__all__ = ["LlavaSPConfig", "LlavaSPConfigError", "SP_OPTION_NAMES", "SpatialSchedule", "spatial_schedule"]

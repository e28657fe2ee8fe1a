"""Processor for LLaVA-SP: images -> pixel tensors and <image> -> the model's number of placeholder tokens.

transformers' LlavaProcessor computes placeholders as grid^2 + num_additional_image_tokens, minus 1 when
vision_feature_select_strategy is 'default' (the CLS token it drops), so LLaVA-SP sets num_additional_image_tokens to
n_spatial, plus 1 for a CLIP tower: 1 + 6 gives 582 for the paper's model.
"""

from __future__ import annotations

from transformers import (
    BaseImageProcessor,
    CLIPImageProcessorPil,
    LlavaProcessor,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    SiglipImageProcessorPil,
)

from sp_core.config import VISION_TOWERS_WITHOUT_CLS, LlavaSPConfig
from sp_core.image_processing import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD


def clip_image_processor(image_size: int) -> CLIPImageProcessorPil:
    """The CLIP preprocessing of LLaVA-1.5: shortest side to image_size (bicubic), centre crop, normalise."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_IMAGE_MEAN),
        image_std=list(CLIP_IMAGE_STD),
        do_convert_rgb=True,
    )


def default_image_processor(vision_config: PreTrainedConfig) -> BaseImageProcessor:
    """The tower's own preprocessing at its image size, for a tower that ships no preprocessor config: SigLIP's
    (both sides to the size, mean/std 0.5) for a SigLIP tower, CLIP's otherwise. Pillow's resize, as LLaVA-1.5's."""
    size = vision_config.image_size
    if vision_config.model_type in VISION_TOWERS_WITHOUT_CLS:
        return SiglipImageProcessorPil(size={"height": size, "width": size})
    return clip_image_processor(size)


def build_llava_sp_processor(
    config: LlavaSPConfig,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor | None = None,
) -> LlavaProcessor:
    image_processor = image_processor or default_image_processor(config.vision_config)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=_dropped_tokens(config) + config.num_spatial_tokens,
    )


def placeholders_per_image(processor: LlavaProcessor, config: LlavaSPConfig) -> int:
    """How many placeholders `processor` puts in place of one <image> for this model's image size."""
    side = config.vision_config.image_size // processor.patch_size
    return side * side + processor.num_additional_image_tokens - _dropped_tokens(processor)


def _dropped_tokens(settings: LlavaSPConfig | LlavaProcessor) -> int:
    """1 where the CLS token is dropped (strategy 'default'), as LlavaProcessor counts it."""
    return 1 if settings.vision_feature_select_strategy == "default" else 0

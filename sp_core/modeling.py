"""LlavaSPForConditionalGeneration: transformers' Llava with the LLaVA-SP projector.

Only the projector differs from LLaVA-1.5, so the model subclasses the transformers Llava classes and swaps
`model.multi_modal_projector`; save_pretrained / from_pretrained / generate / PEFT are the library's own. Each
image fills `config.image_tokens_per_image` placeholder tokens (n_spatial + grid^2 = 582 in the paper), which the
processor expands from one <image>.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    GenerationConfig,
    PreTrainedTokenizerBase,
)
from transformers import initialization as hf_init
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)

from sp_core.checkpoint_check import check_loaded_keys
from sp_core.checkpoint_conversion import register_llava_key_renaming
from sp_core.config import LlavaSPConfig
from sp_core.projector import (
    LlavaSPProjector,
    LlavaSPProjectorOutput,
    LlavaSPTransformerSFE,
)
from sp_core.transformers_compat import CACHE_KEYWORD, pre_encoded_images

logger = logging.getLogger(__name__)


class LlavaSPInputError(ValueError):
    """Model inputs that cannot go together (pixel shape, image count vs placeholders)."""


class LlavaSPPreTrainedModel(LlavaPreTrainedModel):
    config: LlavaSPConfig
    config_class = LlavaSPConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_new_spatial_modules: bool = False, **kwargs):
        """transformers' from_pretrained, exact: every weight comes from the checkpoint and every checkpoint tensor
        is used, or LlavaSPCheckpointError names the keys (and both shapes of a wrong-shaped one).

        allow_new_spatial_modules: let the LLaVA-SP modules start from their initialisation when the checkpoint has
        none (a LLaVA-1.5 checkpoint loaded as an SP variant); nothing else may be missing.
        """
        wants_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # report every wrong shape ourselves, by name, instead of raising
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        fresh = check_loaded_keys(str(pretrained_model_name_or_path), info["missing_keys"], info["unexpected_keys"],
                                  info["mismatched_keys"], allow_new_spatial_modules)
        if fresh:
            logger.warning("%s has no LLaVA-SP modules: %d tensors start from their initialisation",
                           pretrained_model_name_or_path, len(fresh))
        return (model, info) if wants_info else model

    def _init_weights(self, module: nn.Module) -> None:
        # The vision tower and the language model are PreTrainedModels with their own _init_weights (transformers
        # dispatches to them), so every module seen here belongs to the projector. hf_init skips loaded tensors.
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            # SFE kernels cover whole views (fan-in up to 1024*24*24): the library's fixed std of 0.02 would make
            # the spatial tokens ~15x larger than the patch tokens, so scale by fan-in instead.
            hf_init.normal_(module.weight, mean=0.0, std=module.weight[0].numel() ** -0.5)
        elif isinstance(module, LlavaSPTransformerSFE):
            hf_init.zeros_(module.queries)


class LlavaSPModel(LlavaSPPreTrainedModel, LlavaModel):
    def __init__(self, config: LlavaSPConfig):
        # Built here rather than through LlavaModel.__init__ so that the plain projector is never allocated
        # (tests/sp_core/test_transformers_compat.py checks that nothing LlavaModel.__init__ sets is missed).
        LlavaSPPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaSPProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()
        if config.freeze_vision_tower:
            self.vision_tower.requires_grad_(False)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs):
        check_pixel_values(self.config, pixel_values)
        return super().get_image_features(pixel_values=pixel_values, **kwargs)

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None, **kwargs):
        encoded = pre_encoded_images(kwargs)
        if pixel_values is not None:
            check_pixel_values(self.config, pixel_values)
            num_images = pixel_values.shape[0]
        else:
            num_images = len(encoded.pooler_output) if encoded is not None else 0
        cache = kwargs.get(CACHE_KEYWORD)
        prefilling = cache is None or cache.get_seq_length() == 0
        if input_ids is not None and (num_images or prefilling):
            check_placeholder_count(self.config, input_ids, num_images)
        return super().forward(input_ids=input_ids, pixel_values=pixel_values, **kwargs)


class LlavaSPForConditionalGeneration(LlavaSPPreTrainedModel, LlavaForConditionalGeneration):
    def __init__(self, config: LlavaSPConfig):
        LlavaSPPreTrainedModel.__init__(self, config)
        self.model = LlavaSPModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @property
    def projector(self) -> LlavaSPProjector:
        return self.model.multi_modal_projector

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels -> (N, n_spatial + grid^2, D) image tokens, exactly what fills the placeholders."""
        return torch.stack(self.model.get_image_features(pixel_values=pixel_values).pooler_output)

    def project_images(self, pixel_values: torch.Tensor) -> LlavaSPProjectorOutput:
        """The projector's whole output for (N, 3, H, W) pixels: image tokens plus the spatial features and the DFI
        attention (paper Fig. 5), from the same vision features that `image_features` uses."""
        check_pixel_values(self.config, pixel_values)
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise NotImplementedError(f"project_images needs one vision_feature_layer, got {layer}")
        hidden = self.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer]
        if self.config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]  # drop CLS
        return self.projector.project(hidden)


def check_pixel_values(config: LlavaSPConfig, pixel_values: torch.Tensor) -> None:
    """Fail with a readable message before the vision tower would fail cryptically."""
    vision = config.vision_config
    expected = (vision.num_channels, vision.image_size, vision.image_size)
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
        found = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise LlavaSPInputError(
            f"pixel_values must have shape (num_images, {', '.join(map(str, expected))}), got {found}; "
            "preprocess images with the model's processor"
        )
    if not pixel_values.is_floating_point():
        raise LlavaSPInputError(f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}")


def check_placeholder_count(config: LlavaSPConfig, input_ids: torch.Tensor, num_images: int) -> None:
    """Every image must fill exactly image_tokens_per_image placeholders; masked_scatter would fail cryptically."""
    num_placeholders = int((input_ids == config.image_token_id).sum())
    expected = num_images * config.image_tokens_per_image
    if num_placeholders != expected:
        raise LlavaSPInputError(
            f"input_ids hold {num_placeholders} image placeholder tokens (id {config.image_token_id}) but "
            f"{num_images} image(s) x {config.image_tokens_per_image} tokens per image = {expected} were expected; "
            f"each <image> must be expanded to {config.image_tokens_per_image} placeholders by the LLaVA-SP "
            "processor, one <image> per image, and truncation must not cut an image"
        )


def default_generation_config(config: LlavaSPConfig, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Greedy by default (LLaVA's eval scripts); the image placeholder can never be generated."""
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[config.image_token_id],
    )


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForImageTextToText resolve model_type 'llava_sp', and give our classes
    transformers' llava key renaming (idempotent)."""
    register_llava_key_renaming()
    try:
        AutoConfig.register(LlavaSPConfig.model_type, LlavaSPConfig)
    except ValueError:  # already registered in this process
        return
    AutoModel.register(LlavaSPConfig, LlavaSPModel)
    AutoModelForImageTextToText.register(LlavaSPConfig, LlavaSPForConditionalGeneration)


__all__ = [
    "LlavaSPForConditionalGeneration",
    "LlavaSPInputError",
    "LlavaSPModel",
    "LlavaSPPreTrainedModel",
    "default_generation_config",
    "register_auto_classes",
]

# Any use of the model classes makes saved llava_sp checkpoints loadable through the Auto classes.
register_auto_classes()

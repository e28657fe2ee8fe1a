"""The LLaVA-SP projector: patch features of the vision tower -> image tokens for the LLM.

Two parallel branches over the patch features Z_p (B, G*G, C) of a G x G grid (G = 24, C = 1024 for CLIP-L/14-336):

1. The patch MLP (LLaVA-1.5's mlp2x_gelu) maps each patch feature to one "visual patch token": (B, G*G, D).
2. The Spatial Feature Extractor (SFE) views the grid at n scales and reduces each view to one feature of width
   C_sp (default C/2): cropping takes centred crops of growing side ("from central region to global"), pooling
   adaptive-average-pools the whole grid to growing sides ("from abstract to specific"), the sliding-window
   ablation cuts equal windows. A conv whose kernel covers the view (or a small transformer with a learned
   query) reduces it to a single vector: (B, n, C_sp).
   The optional Detail Feature Integrator (DFI) lets those n features (queries) attend to a stride-2 conv map of
   the grid (keys/values) and concatenates the result to them: (B, n, 2 C_sp).
   A second MLP (GELU, Linear) maps them to n "visual spatial tokens": (B, n, D).

Output: [spatial tokens ; patch tokens] = (B, n + G*G, D), spatial tokens FIRST (582 tokens in the paper).

The patch MLP keeps the attribute names of transformers' LlavaMultiModalProjector (linear_1, act, linear_2), so
llava-hf LLaVA-1.5 weights load into it unchanged; with sp_variant "none" this module is exactly that projector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from sp_core.config import LlavaSPConfig
from sp_core.large_kernel_conv import LargeKernelConv2d


@dataclass
class LlavaSPProjectorOutput:
    image_tokens: torch.Tensor  # (B, n_spatial + G*G, D): spatial tokens first, then patch tokens
    spatial_features: torch.Tensor | None  # (B, n_spatial, C_sp or 2 C_sp): input of the spatial MLP
    detail_attention: torch.Tensor | None  # (B, n_spatial, n_keys): DFI attention weights (paper Fig. 5)


# ---- Spatial Feature Extractor: views of the grid, one token per view ---------------------------------------------


class LlavaSPSpatialFeatureExtractor(nn.Module):
    """Base SFE: cuts the (B, C, G, G) grid into the configured views; subclasses reduce each view to a vector."""

    def __init__(self, config: LlavaSPConfig):
        super().__init__()
        schedule = config.spatial_schedule
        self.view_sizes = schedule.view_sizes
        self.view_offsets = schedule.view_offsets
        self.pool_views = config.sp_variant == "pooling"

    def views(self, grid_map: torch.Tensor) -> list[torch.Tensor]:
        if self.pool_views:
            # adaptive_avg_pool2d to the full grid is the identity, as in the official conv_24 (no pool).
            return [F.adaptive_avg_pool2d(grid_map, size) for size in self.view_sizes]
        return [
            grid_map[:, :, top : top + height, left : left + width]
            for (height, width), (top, left) in zip(self.view_sizes, self.view_offsets)
        ]


class LlavaSPConvSFE(LlavaSPSpatialFeatureExtractor):
    """One bias-free conv per view whose kernel is the view's size, so each view becomes one C_sp vector."""

    def __init__(self, config: LlavaSPConfig):
        super().__init__(config)
        self.convs = nn.ModuleList(
            LargeKernelConv2d(config.vision_feature_width, config.spatial_channels, kernel_size=size, bias=False)
            for size in self.view_sizes
        )

    def forward(self, grid_map: torch.Tensor) -> torch.Tensor:
        # each conv output is (B, C_sp, 1, 1)
        return torch.stack([conv(view).flatten(1) for conv, view in zip(self.convs, self.views(grid_map))], dim=1)


class LlavaSPTransformerSFE(LlavaSPSpatialFeatureExtractor):
    """Tab. 3 ablation: per view, an encoder-decoder transformer whose single learned query reads the view."""

    def __init__(self, config: LlavaSPConfig):
        super().__init__(config)
        width = config.spatial_channels
        self.input_projection = nn.Linear(config.vision_feature_width, width)
        self.queries = nn.Parameter(torch.zeros(len(self.view_sizes), width))
        self.transformers = nn.ModuleList(
            nn.Transformer(
                d_model=width,
                nhead=config.sp_transformer_heads,
                num_encoder_layers=config.sp_transformer_layers,
                num_decoder_layers=config.sp_transformer_layers,
                dim_feedforward=width,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
            )
            for _ in self.view_sizes
        )

    def forward(self, grid_map: torch.Tensor) -> torch.Tensor:
        batch = grid_map.shape[0]
        tokens = []
        for index, (transformer, view) in enumerate(zip(self.transformers, self.views(grid_map))):
            source = self.input_projection(view.flatten(2).transpose(1, 2))  # (B, h*w, C_sp)
            query = self.queries[index].expand(batch, 1, -1)  # (B, 1, C_sp)
            tokens.append(transformer(source, query))  # (B, 1, C_sp)
        return torch.cat(tokens, dim=1)


SFE_CLASSES: dict[str, type[LlavaSPSpatialFeatureExtractor]] = {
    "conv": LlavaSPConvSFE,
    "transformer": LlavaSPTransformerSFE,
}


# ---- Detail Feature Integrator ------------------------------------------------------------------------------------


def _norm_linear(width: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))


class LlavaSPDetailFeatureIntegrator(nn.Module):
    """Single-head cross-attention: spatial features (queries) read a stride-2 conv map of the grid (keys/values).

    No output projection and no residual, as in the paper's Eq. 4: the attended details are concatenated to the
    queries on the channel axis.
    """

    def __init__(self, config: LlavaSPConfig):
        super().__init__()
        width = config.spatial_channels
        self.detail_conv = LargeKernelConv2d(
            config.vision_feature_width, width, kernel_size=config.sp_dfi_kernel, stride=2, bias=False
        )
        self.query_projector = _norm_linear(width)
        self.key_projector = _norm_linear(width)
        self.value_projector = _norm_linear(width)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, spatial: torch.Tensor, grid_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        details = self.detail_conv(grid_map).flatten(2).transpose(1, 2)  # (B, K, C_sp), K = ((G-k)//2+1)^2
        query = self.query_projector(spatial)  # (B, n, C_sp)
        key = self.key_projector(details)
        value = self.value_projector(details)
        attention = torch.softmax(query @ key.transpose(1, 2) * self.scale, dim=-1)  # (B, n, K)
        return torch.cat([spatial, attention @ value], dim=-1), attention  # (B, n, 2 C_sp)


# ---- the whole projector ------------------------------------------------------------------------------------------


class LlavaSPProjector(nn.Module):
    def __init__(self, config: LlavaSPConfig):
        super().__init__()
        vision_width, text_width = config.vision_feature_width, config.text_config.hidden_size
        self.grid_size = config.grid_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(vision_width, text_width, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=bias)

        self.spatial_extractor: LlavaSPSpatialFeatureExtractor | None = None
        self.detail_integrator: LlavaSPDetailFeatureIntegrator | None = None
        self.spatial_projector: nn.Sequential | None = None
        if config.num_spatial_tokens:
            self.spatial_extractor = SFE_CLASSES[config.sp_extractor](config)
            spatial_width = config.spatial_channels
            if config.sp_dfi:
                self.detail_integrator = LlavaSPDetailFeatureIntegrator(config)
                spatial_width *= 2
            self.spatial_projector = nn.Sequential(
                nn.GELU(), nn.Linear(spatial_width, text_width, bias=config.sp_projector_bias)
            )

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        """(B, G*G, C) patch features -> (B, n_spatial + G*G, D) image tokens."""
        return self.project(patch_features).image_tokens

    def project(self, patch_features: torch.Tensor) -> LlavaSPProjectorOutput:
        batch, num_patches, channels = patch_features.shape
        if num_patches != self.grid_size**2:
            raise ValueError(
                f"LLaVA-SP projector expects {self.grid_size**2} patch features per image (a {self.grid_size}x"
                f"{self.grid_size} grid, CLS dropped), got {num_patches}; check the vision tower's image_size/"
                "patch_size and vision_feature_select_strategy='default'"
            )
        patch_tokens = self.linear_2(self.act(self.linear_1(patch_features)))  # (B, G*G, D)
        if self.spatial_extractor is None:
            return LlavaSPProjectorOutput(patch_tokens, None, None)

        # row-major patches -> (B, C, G, G): dim 2 = patch row, dim 3 = patch column
        grid_map = patch_features.transpose(1, 2).reshape(batch, channels, self.grid_size, self.grid_size)
        spatial = self.spatial_extractor(grid_map)  # (B, n, C_sp)
        attention = None
        if self.detail_integrator is not None:
            spatial, attention = self.detail_integrator(spatial, grid_map)  # (B, n, 2 C_sp)
        spatial_tokens = self.spatial_projector(spatial)  # (B, n, D)
        return LlavaSPProjectorOutput(torch.cat([spatial_tokens, patch_tokens], dim=1), spatial, attention)


__all__ = [
    "LlavaSPProjector",
    "LlavaSPProjectorOutput",
    "LlavaSPConvSFE",
    "LlavaSPTransformerSFE",
    "LlavaSPDetailFeatureIntegrator",
]

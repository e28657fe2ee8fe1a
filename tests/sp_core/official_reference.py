"""The official LLaVA-SP projector forward, written from the official code's logic directly on the official state dict.

Independent of sp_core.projector on purpose: no shared code, other primitives (einsum instead of conv2d, explicit
pooling bins, unfold for the strided DFI conv), official key names and crop indices as the official code has them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRID = 24


def official_crop_bounds(num_tokens: int) -> list[tuple[int, int]]:
    """The official crop modes: '336_6_tokens' [10-i:14+i] for i=0,2,..,10; '336_3_tokens' [8:16],[4:20],[0:24];
    '224' mode with l=24: [l/2-1-i : l/2+1+i] for i in range(l/2) (12 crops); 1 token: the whole grid."""
    if num_tokens == 6:
        return [(10 - i, 14 + i) for i in range(0, 12, 2)]
    if num_tokens == 3:
        return [(8, 16), (4, 20), (0, 24)]
    if num_tokens == 12:
        return [(GRID // 2 - 1 - i, GRID // 2 + 1 + i) for i in range(GRID // 2)]
    if num_tokens == 1:
        return [(0, 24)]
    raise ValueError(num_tokens)


def adaptive_pool_bins(size_in: int, size_out: int) -> list[tuple[int, int]]:
    """Adaptive pooling bins: start = floor(i*in/out), end = ceil((i+1)*in/out)."""
    return [(math.floor(i * size_in / size_out), math.ceil((i + 1) * size_in / size_out)) for i in range(size_out)]


def reference_adaptive_pool(grid: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, size, size, C) by explicit bin means."""
    bins = adaptive_pool_bins(grid.shape[1], size)
    rows = []
    for r0, r1 in bins:
        rows.append(torch.stack([grid[:, r0:r1, c0:c1, :].mean(dim=(1, 2)) for c0, c1 in bins], dim=1))
    return torch.stack(rows, dim=1)


def _full_kernel_conv(view_bhwc: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A conv whose kernel equals the view: one output per filter. view (B,k,k,C), weight (O,C,k,k) -> (B,O)."""
    return torch.einsum("bhwc,ochw->bo", view_bhwc, weight)


def _layer_norm_linear(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    normed = F.layer_norm(x, (x.shape[-1],), sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], eps=1e-5)
    return normed @ sd[f"{name}.1.weight"].T + sd[f"{name}.1.bias"]


def official_projector_forward(sd: dict[str, torch.Tensor], patch_features: torch.Tensor, variant: str,
                               num_tokens: int = 6, dfi: bool = False) -> torch.Tensor:
    """sd: official keys without prefix (mm_projector.*, conv_*, conv_CM, *_projector, conv_linear.1.*)."""
    batch, _, channels = patch_features.shape
    hidden = patch_features @ sd["mm_projector.0.weight"].T + sd["mm_projector.0.bias"]
    patch_tokens = F.gelu(hidden) @ sd["mm_projector.2.weight"].T + sd["mm_projector.2.bias"]

    grid = patch_features.reshape(batch, GRID, GRID, channels)  # (B, row, col, C)
    tokens = []
    if variant == "cropping":
        for start, end in official_crop_bounds(num_tokens):
            side = end - start
            tokens.append(_full_kernel_conv(grid[:, start:end, start:end, :], sd[f"conv_{side}.weight"]))
    else:
        sides = [GRID * (i + 1) // num_tokens for i in range(num_tokens)]
        for side in sides:
            if side == GRID:
                tokens.append(_full_kernel_conv(grid, sd[f"conv_{side}.weight"]))
            else:
                tokens.append(_full_kernel_conv(reference_adaptive_pool(grid, side), sd[f"conv_{side}.1.weight"]))
    spatial = torch.stack(tokens, dim=1)  # (B, n, C_sp)

    if dfi:
        weight = sd["conv_CM.weight"]  # (C_sp, C, k, k), stride 2, no padding
        kernel = weight.shape[-1]
        patches = grid.permute(0, 3, 1, 2).unfold(2, kernel, 2).unfold(3, kernel, 2)  # (B, C, n, n, k, k)
        details = torch.einsum("bcxyhw,ochw->bxyo", patches, weight).reshape(batch, -1, weight.shape[0])
        query = _layer_norm_linear(spatial, sd, "query_projector")
        key = _layer_norm_linear(details, sd, "key_projector")
        value = _layer_norm_linear(details, sd, "value_projector")
        attention = torch.softmax(query @ (key.transpose(1, 2) / math.sqrt(spatial.shape[-1])), dim=-1)
        spatial = torch.cat([spatial, attention @ value], dim=-1)

    spatial_tokens = F.gelu(spatial) @ sd["conv_linear.1.weight"].T
    if "conv_linear.1.bias" in sd:
        spatial_tokens = spatial_tokens + sd["conv_linear.1.bias"]
    return torch.cat([spatial_tokens, patch_tokens], dim=1)


def official_state_dict(variant: str, num_tokens: int = 6, dfi: bool = False, dfi_kernel: int = 16,
                        vision_width: int = 1024, spatial_width: int = 512, text_width: int = 4096,
                        spatial_bias: bool = False, seed: int = 0, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes (scaled so activations stay O(1))."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=generator) / math.sqrt(fan_in)

    sd = {
        "mm_projector.0.weight": randn(text_width, vision_width), "mm_projector.0.bias": randn(text_width),
        "mm_projector.2.weight": randn(text_width, text_width), "mm_projector.2.bias": randn(text_width),
    }
    if variant == "cropping":
        sides = [end - start for start, end in official_crop_bounds(num_tokens)]
    else:
        sides = [GRID * (i + 1) // num_tokens for i in range(num_tokens)]
    for side in sides:
        name = f"conv_{side}.1.weight" if variant == "pooling" and side < GRID else f"conv_{side}.weight"
        sd[name] = randn(spatial_width, vision_width, side, side)
    if dfi:
        sd["conv_CM.weight"] = randn(spatial_width, vision_width, dfi_kernel, dfi_kernel)
        for role in ("query", "key", "value"):
            sd[f"{role}_projector.0.weight"] = 1 + 0.1 * randn(spatial_width)
            sd[f"{role}_projector.0.bias"] = 0.1 * randn(spatial_width)
            sd[f"{role}_projector.1.weight"] = randn(spatial_width, spatial_width)
            sd[f"{role}_projector.1.bias"] = randn(spatial_width)
    sd["conv_linear.1.weight"] = randn(text_width, spatial_width * (2 if dfi else 1))
    if spatial_bias:
        sd["conv_linear.1.bias"] = randn(text_width)
    return {prefix + key: value for key, value in sd.items()}

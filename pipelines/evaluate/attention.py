"""DFI attention maps (paper Fig. 5): how much each visual spatial token attends to each detail key.

For a DFI model, `project_images` returns the (n_spatial, n_keys) attention per image; we draw each spatial token's
attention over the sqrt(n_keys) x sqrt(n_keys) key grid beside the image, one PNG per image, so cropping and pooling
models can be compared on the same pictures.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from sp_core.inference import LlavaSPGenerator


def attention_maps(generator: LlavaSPGenerator, images: list[Image.Image]) -> torch.Tensor | None:
    """(N, n_spatial, n_keys) DFI attention for these images, or None when the model has no DFI."""
    config = generator.model.config
    if not images or not config.sp_dfi or config.num_spatial_tokens == 0:  # the baseline has no spatial tokens
        return None
    pixels = generator.image_processor(images).to(device=generator.model.device, dtype=generator.model.dtype)
    with torch.inference_mode():
        attention = generator.model.project_images(pixels).detail_attention
    return None if attention is None else attention.float().cpu()


def plot_attention(image: Image.Image, attention: torch.Tensor, title: str, path: Path) -> Path:
    """The image and one heat map per spatial token over the key grid; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_tokens, num_keys = attention.shape
    side = math.isqrt(num_keys)
    figure, axes = plt.subplots(1, num_tokens + 1, figsize=(2.2 * (num_tokens + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for token, axis in enumerate(axes[1:]):
        heat = axis.imshow(attention[token].reshape(side, side).numpy(), cmap="viridis", vmin=0.0)
        axis.set_title(f"spatial token {token + 1}", fontsize=9)
        figure.colorbar(heat, ax=axis, fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{title}: DFI attention over the {side}x{side} detail keys", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path

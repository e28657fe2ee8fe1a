"""Writes data/clip_torchvision_reference.safetensors: transformers' default CLIPImageProcessor's crops of a few images.

The default CLIPImageProcessor runs on torchvision, which the project cannot depend on (no CPU build of it exists
on the package index), so the parity test reads these stored outputs instead of calling it. To regenerate, in a
virtual environment that has this project's dependencies plus `torchvision` built for the same torch:

    python -m tests.sp_core.make_clip_torchvision_reference

The file holds each input image ("input/<case>", uint8 HWC) and the reference's crop for each aspect mode
("expected/<aspect>/<case>", uint8 HWC, recovered exactly from its normalised float32 output), with the library
versions in the metadata. "pad" feeds the reference LLaVA's expand2square image, as the official code does.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from sp_core.image_processing import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    LlavaSPImageProcessor,
    expand_to_square,
)

OUTPUT = Path(__file__).parent / "data" / "clip_torchvision_reference.safetensors"
IMAGE_SIZE = 64
# Down- and up-scaling, both orientations, extreme aspect ratios, and sizes at or next to the crop size.
CASES: dict[str, tuple[int, int]] = {
    "wide": (100, 75), "tall": (75, 130), "same": (64, 64), "small": (40, 30),
    "strip": (300, 41), "nearly": (65, 64), "thin": (17, 200), "large": (160, 120),
}


def photo_like(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth colour fields plus fine noise, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    noise = rng.integers(-20, 21, (height, width, 3), dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def reference_crop(processor, image: Image.Image) -> np.ndarray:
    """The processor's (3, S, S) normalised output back to the (S, S, 3) uint8 it was computed from."""
    pixels = processor(image, return_tensors="pt").pixel_values[0].double().numpy()
    mean = np.array(CLIP_IMAGE_MEAN).reshape(3, 1, 1)
    std = np.array(CLIP_IMAGE_STD).reshape(3, 1, 1)
    return np.ascontiguousarray(np.rint((pixels * std + mean) * 255).astype(np.uint8).transpose(1, 2, 0))


def main() -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(CLIP_IMAGE_MEAN), image_std=list(CLIP_IMAGE_STD), do_convert_rgb=True,
    )
    if processor.backend != "torchvision":
        raise SystemExit(f"CLIPImageProcessor runs on {processor.backend!r} here; install torchvision first")
    fill = LlavaSPImageProcessor().pad_fill  # LLaVA's expand2square colour for the CLIP mean
    tensors = {}
    for seed, (case, (width, height)) in enumerate(CASES.items()):
        pixels = photo_like(width, height, seed)
        image = Image.fromarray(pixels)
        tensors[f"input/{case}"] = torch.from_numpy(pixels)
        tensors[f"expected/square/{case}"] = torch.from_numpy(reference_crop(processor, image))
        tensors[f"expected/pad/{case}"] = torch.from_numpy(reference_crop(processor, expand_to_square(image, fill)))
    metadata = {name: importlib.metadata.version(name) for name in ("transformers", "torchvision", "torch")}
    metadata["image_size"] = str(IMAGE_SIZE)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, OUTPUT, metadata=metadata)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes) with {metadata}")


if __name__ == "__main__":
    main()

"""The official LLaVA-1.5 image loading, restated from its logic (LazySupervisedDataset.__getitem__ with
image_aspect_ratio="pad", and mm_utils.process_images at evaluation): independent of sp_core on purpose.

    image = Image.open(os.path.join(image_folder, image_file)).convert("RGB")
    image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    image = processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
"""

from __future__ import annotations

import os

import torch
from PIL import Image


def official_open(path: str | os.PathLike) -> Image.Image:
    return Image.open(path).convert("RGB")


def official_expand2square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    if width > height:
        result = Image.new(image.mode, (width, width), background)
        result.paste(image, (0, (width - height) // 2))
        return result
    result = Image.new(image.mode, (height, height), background)
    result.paste(image, ((height - width) // 2, 0))
    return result


def official_pixel_values(path: str | os.PathLike, processor) -> torch.Tensor:
    """(3, S, S) float32, as the official training and evaluation code feed the vision tower."""
    background = tuple(int(value * 255) for value in processor.image_mean)
    image = official_expand2square(official_open(path), background)
    return processor.preprocess(image, return_tensors="pt")["pixel_values"][0]

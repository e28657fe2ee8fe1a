"""The image options every config shares (preprocessing, evaluation, serving): their allowed values, defaults and
meaning. Only typing and pydantic here, so that a job's configuration, and its --help, load without torch or
Pillow."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

# How a non-square image becomes square before the CLIP resize: "pad" (LLaVA-1.5's expand2square, the default) or
# "square" (CLIP's own shortest-edge resize and centre crop).
AspectMode = Literal["pad", "square"]
ASPECT_MODES: tuple[str, ...] = get_args(AspectMode)
# Whose bicubic resize runs: Pillow's, as the official LLaVA-1.5 code and CLIPImageProcessorPil, or torch's
# antialiased one, as transformers' torchvision-backed CLIPImageProcessor.
ResizeBackend = Literal["torch", "pil"]
RESIZE_BACKENDS: tuple[str, ...] = get_args(ResizeBackend)
# How file bytes become RGB (sp_core.image_decoding): "llava" as the official loader, "display" as a viewer shows it.
ImageDecoding = Literal["llava", "display"]
IMAGE_DECODINGS: tuple[str, ...] = get_args(ImageDecoding)

DEFAULT_ASPECT: AspectMode = "pad"
DEFAULT_RESIZE: ResizeBackend = "pil"
DEFAULT_DECODING: ImageDecoding = "llava"
# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS), about 0.25 GB of RGB pixels.
DEFAULT_MAX_PIXELS = 89_478_485


# The options as config fields take them, with their meaning (evaluation and serving must use training's values).
ImageAspectOption = Annotated[AspectMode, Field(description=(
    "pad (LLaVA-1.5's expand2square) or square (CLIP's centre crop); evaluation and serving as in training."))]
ImageResizeOption = Annotated[ResizeBackend, Field(description=(
    "pil: Pillow's bicubic, as CLIPImageProcessorPil and the official LLaVA-1.5 data; torch: torchvision's, as "
    "transformers' default CLIPImageProcessor (1-2 uint8 levels apart on under 1% of pixels)."))]
ImageDecodingOption = Annotated[ImageDecoding, Field(description=(
    "llava: Pillow's convert(\"RGB\") as the official loader (EXIF ignored, alpha dropped, 16-bit clipped); display: "
    "as a viewer shows it (EXIF orientation, transparency on white, 16-bit rescaled)."))]


def decoding_problem(decoding: str) -> str | None:
    """What is wrong with a config's image_decoding value, or None."""
    if decoding in IMAGE_DECODINGS:
        return None
    return f"image_decoding={decoding!r}; allowed: {', '.join(IMAGE_DECODINGS)}"

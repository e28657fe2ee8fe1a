"""The CLIP preprocessing of LLaVA-1.5 / LLaVA-SP on uint8, split so that data shards can store uint8 crops.

`LlavaSPImageProcessor` does the pixel work of transformers' CLIPImageProcessor (shortest edge to `image_size`
with antialiased bicubic, centre crop; or SigLIP's: both sides to `image_size`), optionally after LLaVA's
`expand2square` ("pad"); `resize` picks whose bicubic runs (see `resize_bicubic`). `to_uint8` gives the (S, S, 3)
uint8 crop, 4x smaller than float32, for the shards; `normalize` turns a batch of crops into the (N, 3, S, S)
float32 tensor at train time; calling the processor on PIL images does both at once (serving).

Decoding files into RGB images is `sp_core.image_decoding`. Pure PIL + numpy + torch: this file is imported
inside data workers and must stay light (no transformers, no Ray).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sp_core.image_decoding import to_rgb
from sp_core.image_options import (
    ASPECT_MODES,
    DEFAULT_ASPECT,
    DEFAULT_RESIZE,
    RESIZE_BACKENDS,
    AspectMode,
    ResizeBackend,
)

# OpenAI CLIP normalisation, the values every LLaVA-1.5 vision tower uses; equal to sp_core.processing's constants
# (a test pins this), repeated here so this module does not import transformers.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP's normalisation (SiglipImageProcessor's defaults).
SIGLIP_IMAGE_MEAN = SIGLIP_IMAGE_STD = (0.5, 0.5, 0.5)

# How an image meets the tower's square: "crop" (CLIP: shortest edge to S, centre crop) or "squash" (SigLIP: both
# sides to S). After "pad" the image is already square, so the two agree there.
FitMode = Literal["crop", "squash"]
FIT_MODES: tuple[str, ...] = get_args(FitMode)

# ----------------------------------------------------------------------------------------------------------------
# Geometry


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """LLaVA's expand2square: centre `image` on a square canvas of side max(W, H) filled with `fill`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    # Same offsets as LLaVA (floor of half the slack), so padded pixels line up with the official preprocessing.
    offset = (0, (width - height) // 2) if width > height else ((height - width) // 2, 0)
    canvas.paste(image, offset)
    return canvas


def resize_bicubic(image: Image.Image, size: tuple[int, int], backend: ResizeBackend) -> np.ndarray:
    """RGB `image` -> (H', W', 3) uint8 at `size` = (W', H'), antialiased bicubic, by one of the two references.

    "pil" is Pillow's `resize(size, BICUBIC)`, the call of the official LLaVA-1.5 preprocessing and of
    CLIPImageProcessorPil (transformers' CLIPImageProcessor without torchvision); "torch" is
    `F.interpolate(uint8, "bicubic", antialias=True)`, the call of the torchvision-backed CLIPImageProcessor. Both
    are Pillow's algorithm, but torch keeps fewer bits of each filter weight, so they differ by 1-2 levels on under
    1% of pixels.
    """
    if backend == "pil":
        return np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    # np.array copies PIL's buffer into a writable array (the read-only np.asarray view makes torch warn).
    pixels = torch.from_numpy(np.array(image))  # (H, W, 3)
    if pixels.shape[:2] == (size[1], size[0]):  # torchvision returns the image untouched at its own size
        return pixels.numpy()
    # NHWC in memory, NCHW by shape: torch picks its channels-last uint8 kernel.
    channels_last = pixels.permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(channels_last, size=(size[1], size[0]), mode="bicubic", align_corners=False,
                            antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


def shortest_edge_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(W, H) after resizing the shorter side to `shortest_edge`; the longer side is truncated, as transformers does."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


# ----------------------------------------------------------------------------------------------------------------
# Processor


@dataclass
class LlavaSPImageProcessor:
    """CLIP preprocessing of LLaVA-SP on uint8: [pad to square] -> shortest edge to S (bicubic) -> centre crop S."""

    # Side S of the square crop the vision tower expects (336 for CLIP ViT-L/14-336).
    image_size: int = 336
    # Per-channel RGB mean and std on the [0, 1] scale; the mean also gives the "pad" fill colour.
    image_mean: tuple[float, float, float] = field(default=CLIP_IMAGE_MEAN)
    image_std: tuple[float, float, float] = field(default=CLIP_IMAGE_STD)
    # "pad": LLaVA-1.5's expand2square with the mean colour first; "square": resize + centre crop only.
    aspect: AspectMode = DEFAULT_ASPECT
    # Whose bicubic resize runs (see `resize_bicubic`): "pil", that of CLIPImageProcessorPil and the official
    # LLaVA-1.5 training data, or "torch", that of the torchvision-backed CLIPImageProcessor (1-2 levels off on under
    # 1% of pixels).
    resize: ResizeBackend = DEFAULT_RESIZE
    # "crop" for CLIP's processor, "squash" for SigLIP's (size {height, width}, no centre crop).
    fit: FitMode = "crop"

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(value) for value in self.image_mean)
        self.image_std = tuple(float(value) for value in self.image_std)
        problems = []
        if self.aspect not in ASPECT_MODES:
            problems.append(f"aspect must be one of {list(ASPECT_MODES)}, got {self.aspect!r}")
        if self.resize not in RESIZE_BACKENDS:
            problems.append(f"resize must be one of {list(RESIZE_BACKENDS)}, got {self.resize!r}")
        if self.fit not in FIT_MODES:
            problems.append(f"fit must be one of {list(FIT_MODES)}, got {self.fit!r}")
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            problems.append(f"image_size must be a positive int, got {self.image_size!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            problems.append(f"image_mean and image_std need 3 values (RGB), got {self.image_mean}, {self.image_std}")
        if any(value <= 0 for value in self.image_std):
            problems.append(f"image_std must be positive, got {self.image_std}")
        if problems:
            raise ValueError("LlavaSPImageProcessor: " + "; ".join(problems))
        # (x / 255 - mean) / std folded into x * scale + offset; computed in float64, applied in float32.
        mean = np.array(self.image_mean, dtype=np.float64)
        std = np.array(self.image_std, dtype=np.float64)
        self._scale = torch.tensor(1.0 / (255.0 * std), dtype=torch.float32).view(1, 3, 1, 1)
        self._offset = torch.tensor(-mean / std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def pad_fill(self) -> tuple[int, int, int]:
        """The expand2square background, (122, 116, 104) for CLIP; int() truncates exactly as LLaVA does."""
        return tuple(int(value * 255) for value in self.image_mean)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """One image -> its (S, S, 3) uint8 crop, pixel-identical to the chosen reference before rescaling."""
        rgb, resized_size, (left, top, width, height) = self.geometry(image)
        resized = resize_bicubic(rgb, resized_size, self.resize)
        return np.ascontiguousarray(resized[top : top + height, left : left + width])

    def geometry(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int], tuple[int, int, int, int]]:
        """The RGB (padded) image to resize, the size it is resized to, and the centre crop box in that size."""
        image = to_rgb(image)
        if self.aspect == "pad":
            image = expand_to_square(image, self.pad_fill)
        size = self.image_size
        if self.fit == "squash":
            return image, (size, size), (0, 0, size, size)
        new_width, new_height = shortest_edge_size(*image.size, size)
        left, top = (new_width - size) // 2, (new_height - size) // 2
        return image, (new_width, new_height), (left, top, size, size)

    def normalize(self, batch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 crops -> (N, 3, S, S) float32 pixel values for the vision tower, contiguous NCHW."""
        pixels = torch.as_tensor(batch_uint8)
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(
                f"normalize expects uint8 crops shaped (N, S, S, 3), got {pixels.dtype} {tuple(pixels.shape)}"
            )
        batch, height, width, channels = pixels.shape
        out = torch.empty((batch, channels, height, width), dtype=torch.float32)
        out.copy_(pixels.permute(0, 3, 1, 2))  # uint8 NHWC -> float32 NCHW in one pass
        return torch.addcmul(self._offset, out, self._scale, out=out)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> (N, 3, S, S) float32 pixel values, equal to the chosen reference processor's pixel_values up
        to float32 rounding (about 1e-6)."""
        if not images:
            return torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.float32)
        return self.normalize(np.stack([self.to_uint8(image) for image in images]))

    @classmethod
    def from_pretrained_dir(
        cls, path: str | os.PathLike, aspect: AspectMode = DEFAULT_ASPECT, resize: ResizeBackend = DEFAULT_RESIZE
    ) -> LlavaSPImageProcessor:
        """Read size / mean / std from a directory saved by transformers (preprocessor or processor config)."""
        directory = Path(path)
        preprocessor_file = directory / "preprocessor_config.json"
        processor_file = directory / "processor_config.json"
        # A lone image processor saves preprocessor_config.json; a LlavaProcessor nests it in processor_config.json.
        if preprocessor_file.is_file():
            config = json.loads(preprocessor_file.read_text())
        elif processor_file.is_file():
            config = json.loads(processor_file.read_text()).get("image_processor")
        else:
            config = None
        if config is None:
            raise FileNotFoundError(
                f"no image processor config in {directory}: expected preprocessor_config.json, or "
                "processor_config.json with an 'image_processor' entry (save the CLIP processor with save_pretrained)"
            )
        return cls.from_config_dict(config, aspect=aspect, resize=resize)

    @classmethod
    def from_clip_processor(
        cls, hf_processor: Any, aspect: AspectMode = DEFAULT_ASPECT, resize: ResizeBackend = DEFAULT_RESIZE
    ) -> LlavaSPImageProcessor:
        """Follow an in-memory transformers CLIP image processor (anything with `to_dict()`)."""
        return cls.from_config_dict(hf_processor.to_dict(), aspect=aspect, resize=resize)

    @classmethod
    def from_config_dict(
        cls, config: dict[str, Any], aspect: AspectMode = DEFAULT_ASPECT, resize: ResizeBackend = DEFAULT_RESIZE
    ) -> LlavaSPImageProcessor:
        """Build from a CLIP or SigLIP image processor config dict; refuse settings this uint8 pipeline does not
        implement. CLIP's resizes the shortest edge and centre-crops; SigLIP's resizes to {height, width} uncropped."""
        if not config.get("do_center_crop") and _size_value(config.get("size"), "shortest_edge") is None:
            kind, fit, (mean, std) = "SigLIP", "squash", (SIGLIP_IMAGE_MEAN, SIGLIP_IMAGE_STD)
            image_size, problems = _squash_size(config)
            flags = ("do_resize", "do_rescale", "do_normalize")
        else:
            kind, fit, (mean, std) = "CLIP", "crop", (CLIP_IMAGE_MEAN, CLIP_IMAGE_STD)
            image_size, problems = _crop_size(config)
            flags = ("do_resize", "do_center_crop", "do_rescale", "do_normalize")
        problems += _shared_setting_problems(config, flags)
        if problems:
            raise ValueError(f"unsupported {kind} image processor config: " + "; ".join(problems))
        return cls(image_size=image_size, image_mean=tuple(config.get("image_mean", mean)),
                   image_std=tuple(config.get("image_std", std)), aspect=aspect, resize=resize, fit=fit)


def _crop_size(config: dict[str, Any]) -> tuple[int | None, list[str]]:
    """CLIP's geometry: the shortest edge resized to S, then an S x S centre crop."""
    size = config.get("size")
    shortest_edge = _size_value(size, "shortest_edge")
    crop_size = config.get("crop_size", shortest_edge)
    crop_height, crop_width = _size_value(crop_size, "height"), _size_value(crop_size, "width")
    if shortest_edge is None:
        return None, [f"size must be {{'shortest_edge': N}} (aspect-keeping resize), got {size}"]
    if not shortest_edge == crop_height == crop_width:
        return None, [f"size.shortest_edge ({shortest_edge}) must equal crop_size ({crop_height}x{crop_width})"]
    return shortest_edge, []


def _squash_size(config: dict[str, Any]) -> tuple[int | None, list[str]]:
    """SigLIP's geometry: both sides resized to a square {height, width}, no centre crop."""
    size = config.get("size")
    height, width = _size_value(size, "height"), _size_value(size, "width")
    if height is None or height != width:
        return None, [f"size must be a square {{'height': N, 'width': N}} without a centre crop, got {size}"]
    return height, []


def _shared_setting_problems(config: dict[str, Any], flags: tuple[str, ...]) -> list[str]:
    """Bicubic, 1/255 and the given steps switched on: what both kinds of processor config must say."""
    problems = []
    if int(config.get("resample", 3)) != int(Image.Resampling.BICUBIC):
        problems.append(f"resample must be 3 (bicubic), got {config.get('resample')}")
    for flag in flags:
        if not config.get(flag, True):
            problems.append(f"{flag} must be true, got {config.get(flag)}")
    if abs(float(config.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        problems.append(f"rescale_factor must be 1/255, got {config.get('rescale_factor')}")
    return problems


def _size_value(size: int | dict[str, int | None] | None, key: str) -> int | None:
    """Old configs store sizes as a bare int, new ones as a dict ({"shortest_edge": 336}, {"height": .., ...})."""
    if isinstance(size, int):
        return size
    return (size or {}).get(key)

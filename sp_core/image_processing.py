"""Image decoding and the CLIP preprocessing of LLaVA-1.5 / LLaVA-SP, split so that data shards can store uint8 crops.

Two steps, each usable alone:

- `load_rgb_image` turns file bytes (or a path) into an RGB PIL image, or raises an `ImageError` whose `reason` names
  the problem, so a data pipeline can quarantine the row instead of crashing (the official code prints the OSError and
  then fails on an undefined variable; it also sets `ImageFile.LOAD_TRUNCATED_IMAGES`, which we deliberately do not).
- `LlavaSPImageProcessor` does the pixel work of transformers' CLIPImageProcessor (shortest edge to `image_size`
  with antialiased bicubic, centre crop; or SigLIP's: both sides to `image_size`) on uint8, optionally after LLaVA's
  `expand2square` ("pad"); `resize` picks whose bicubic it reproduces bit for bit (see `resize_bicubic`). `to_uint8`
  gives the (S, S, 3) uint8 crop, 4x smaller than float32, for the shards; `normalize` turns a batch of crops into the
  (N, 3, S, S) float32 tensor at train time with one fused multiply-add; calling the processor on PIL images does
  both at once (serving), returning the same values (contiguous with "pil", channels-last with "torch").

Pure PIL + numpy + torch: this file is imported inside data workers and must stay light (no transformers, no Ray).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from sp_core.pillow_resize import pillow_resize_crop

# OpenAI CLIP normalisation, the values every LLaVA-1.5 vision tower uses; equal to sp_core.processing's constants
# (a test pins this), repeated here so this module does not import transformers.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP's normalisation (SiglipImageProcessor's defaults).
SIGLIP_IMAGE_MEAN = SIGLIP_IMAGE_STD = (0.5, 0.5, 0.5)

# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS), about 0.25 GB of RGB pixels.
DEFAULT_MAX_PIXELS = 89_478_485

AspectMode = Literal["pad", "square"]
ASPECT_MODES: tuple[str, ...] = get_args(AspectMode)

ResizeBackend = Literal["torch", "pil"]
RESIZE_BACKENDS: tuple[str, ...] = get_args(ResizeBackend)

# How an image meets the tower's square: "crop" (CLIP: shortest edge to S, centre crop) or "squash" (SigLIP: both
# sides to S). After "pad" the image is already square, so the two agree there.
FitMode = Literal["crop", "squash"]
FIT_MODES: tuple[str, ...] = get_args(FitMode)

# The defaults every config and loader shares: LLaVA-1.5's padding, and Pillow's resize, which the official LLaVA-1.5
# code and CLIPImageProcessorPil (transformers' CLIPImageProcessor without torchvision) run (see `resize_bicubic`).
DEFAULT_ASPECT: AspectMode = "pad"
DEFAULT_RESIZE: ResizeBackend = "pil"


def image_option_problems(aspect: str, resize: str) -> list[str]:
    """What is wrong with a config's image_aspect / image_resize, one message per bad value (empty if nothing)."""
    problems = []
    if aspect not in ASPECT_MODES:
        problems.append(f"image_aspect={aspect!r}; allowed: {', '.join(ASPECT_MODES)}")
    if resize not in RESIZE_BACKENDS:
        problems.append(f"image_resize={resize!r}; allowed: {', '.join(RESIZE_BACKENDS)}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Errors: one subclass per quarantine reason


class ImageError(ValueError):
    """A data row's image cannot be used; `reason` is a stable machine-readable tag for quarantine tables."""

    reason: str = "image_error"


class ImageUndecodableError(ImageError):
    """Not an image PIL can read: garbage bytes, an unknown format, or a corrupt stream."""

    reason = "image_undecodable"


class ImageTruncatedError(ImageError):
    """The file ends before the pixel data does (a partial download or copy)."""

    reason = "image_truncated"


class ImageTooLargeError(ImageError):
    """Width x height is over the pixel budget: a possible decompression bomb, rejected before decoding."""

    reason = "image_too_large"


# ----------------------------------------------------------------------------------------------------------------
# Decoding


def load_rgb_image(source: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `source` (encoded bytes or a file path) to an RGB image with EXIF orientation applied.

    The pixel budget is checked from the header, before any pixel is decoded. PIL's own bomb check (at
    Image.MAX_IMAGE_PIXELS) runs first inside `Image.open`, so the effective limit is the smaller of the two.
    A missing path raises FileNotFoundError, not an ImageError: when files are missing it is usually the image
    folder that is wrong, and quarantining every row would hide that.
    """
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    with io.BytesIO(source) if in_memory else Path(source).open("rb") as stream:
        image = _open_checked(stream, max_pixels)
        _load_pixels(image)
    image = _apply_exif_orientation(image)
    return to_rgb(image)


def _open_checked(stream: io.BufferedIOBase, max_pixels: int) -> Image.Image:
    """Read the header only and enforce the pixel budget."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; we want a reason, not a log line. (The filter change is
            # process-wide while the header is read; it touches only this warning class.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"image over PIL's pixel limit {Image.MAX_IMAGE_PIXELS}: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageUndecodableError(f"not a recognised image format: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageUndecodableError(f"cannot read image header: {type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over max_pixels={max_pixels}; "
            "raise max_pixels if such images are expected"
        )
    return image


def _load_pixels(image: Image.Image) -> None:
    """Decode the pixels now, while the stream is open, classifying failures."""
    try:
        image.load()
    except OSError as error:
        # PIL reports a short file as "image file is truncated" (JPEG adds the byte count).
        if "truncated" in str(error).lower():
            raise ImageTruncatedError(f"{image.format} {image.size[0]}x{image.size[1]}: {error}") from error
        raise ImageUndecodableError(f"{image.format} pixel data is corrupt: {error}") from error
    except (SyntaxError, ValueError, EOFError) as error:
        raise ImageUndecodableError(f"{image.format} pixel data is corrupt: {type(error).__name__}: {error}") from error


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the camera's EXIF Orientation tag says, so the model sees what a viewer shows."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError) as error:
        raise ImageUndecodableError(f"corrupt EXIF metadata: {type(error).__name__}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited onto white like transformers' `convert_to_rgb`.

    High-bit-depth greyscale is rescaled rather than clipped (PIL's own convert clips 16-bit values at 255, turning
    most of a 16-bit image white).
    """
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")  # uint8 (H, W) -> "L" -> RGB
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageUndecodableError(f"cannot convert PIL mode {image.mode!r} to RGB: {error}") from error


def _has_alpha(image: Image.Image) -> bool:
    # Lower-case "a" is PIL's premultiplied alpha (RGBa, La); convert("RGBA") un-premultiplies it.
    return any(band in ("A", "a") for band in image.getbands()) or image.info.get("transparency") is not None


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """'I;16*' and 'I' are read as 16-bit (0..65535 -> 0..255, rounded); 'F' as [0, 1] if it fits, else 0..255."""
    values = np.asarray(image)  # (H, W), uint16 / int32 / float32
    if image.mode == "F":
        values = values.astype(np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    # 65535 / 255 = 257 exactly, so x / 257 maps the 16-bit range onto 8 bits; +128 rounds to nearest.
    clipped = np.clip(values.astype(np.int64), 0, 65535)
    return ((clipped + 128) // 257).astype(np.uint8)


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

    "torch" is `F.interpolate(uint8, "bicubic", antialias=True)`, the very call transformers' torchvision-backed
    CLIPImageProcessor makes; "pil" is Pillow's `resize(size, BICUBIC)`, which CLIPImageProcessorPil (what
    transformers runs without torchvision) and the official LLaVA-1.5 code call, recomputed by
    `sp_core.pillow_resize`. Both are Pillow's algorithm, but torch keeps fewer bits of each filter weight, so they
    differ by 1-2 levels on under 1% of pixels.
    """
    return resize_crop_bicubic(image, size, (0, 0, *size), backend)


def resize_crop_bicubic(
    image: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int], backend: ResizeBackend
) -> np.ndarray:
    """The (h, w, 3) uint8 crop `box` = (left, top, w, h) of `resize_bicubic(image, size, backend)`.

    "pil" computes only the crop's pixels; "torch" resizes the whole image and returns a view into it.
    """
    left, top, width, height = box
    if backend == "pil":
        planes = pillow_resize_crop(rgb_pixels(image), size, box)  # (3, h, w) float32 holding uint8 values
        return np.ascontiguousarray(planes.transpose(1, 2, 0), dtype=np.uint8)
    # np.array copies PIL's buffer into a writable array (the read-only np.asarray view makes torch warn).
    pixels = torch.from_numpy(np.array(image))  # (H, W, 3)
    if pixels.shape[:2] != (size[1], size[0]):  # torchvision returns the image untouched at its own size
        # NHWC in memory, NCHW by shape: torch picks its channels-last uint8 kernel and returns channels-last.
        channels_last = pixels.permute(2, 0, 1).unsqueeze(0)
        resized = F.interpolate(channels_last, size=(size[1], size[0]), mode="bicubic", align_corners=False,
                                antialias=True)
        pixels = resized[0].permute(1, 2, 0)
    return pixels.numpy()[top : top + height, left : left + width]


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """An RGB image's pixels as (H, W, 3) uint8, read-only.

    Where Pillow can export its memory (Arrow, Pillow >= 11.2, an image in one memory block: under 16 MB, about 4
    megapixels), this is a view of it, with no copy: Pillow keeps RGB as 4 bytes per pixel, and copying them out
    (`np.asarray`, `Image.split`) costs about a third of the whole preprocessing of a 640x480 photo. Otherwise a copy.
    """
    if image.mode != "RGB":
        raise ValueError(f"rgb_pixels needs an RGB image, got mode {image.mode!r} (to_rgb converts any mode)")
    storage = _pillow_rgbx_view(image)
    return storage[..., :3] if storage is not None else np.asarray(image)


def _pillow_rgbx_view(image: Image.Image) -> np.ndarray | None:
    """(H, W, 4) uint8 view of an RGB image's own memory, or None where Pillow cannot hand it out whole."""
    if not hasattr(image, "__arrow_c_array__"):
        return None
    import pyarrow  # a dependency anyway; imported here so that importing this module stays light

    try:
        exported = pyarrow.array(image)  # keeps Pillow's memory alive for as long as the view exists
    except ValueError:  # rows spread over several memory blocks
        return None
    width, height = image.size
    kind = exported.type  # fixed_size_list<RGB: uint8>[4]: the field's name varies, so compare the parts
    if not (pyarrow.types.is_fixed_size_list(kind) and kind.list_size == 4 and kind.value_type == pyarrow.uint8()
            and len(exported) == width * height):
        return None
    return exported.flatten().to_numpy(zero_copy_only=True).reshape(height, width, 4)


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
    # Whose bicubic resize to reproduce bit for bit (see `resize_bicubic`): "pil", CLIPImageProcessorPil and the
    # official LLaVA-1.5 training data, or "torch", the torchvision-backed CLIPImageProcessor (faster, 1-2 levels off
    # on under 1% of pixels).
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
        return np.ascontiguousarray(self._crop_view(image))

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

    def _crop_view(self, image: Image.Image) -> np.ndarray:
        """The (S, S, 3) uint8 crop; with "torch" a view into the resized image, so batching copies it only once."""
        # Pillow's resize is computed for the crop alone (sp_core.pillow_resize), bit for bit as if the whole image
        # had been resized; PIL's own box= argument is not (float32 box edges), and one level of difference is
        # already 0.015 after normalisation.
        return resize_crop_bicubic(*self.geometry(image), self.resize)

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
        """PIL images -> (N, 3, S, S) float32 pixel values.

        Values are bit-identical to `normalize(stack(to_uint8(image) for each image))` and equal to the chosen
        reference processor's pixel_values up to float32 rounding (about 1e-6). Each crop is normalised in the layout
        its resize produced, while it is in cache: with "pil" that is planar, so the result is contiguous NCHW; with
        "torch" it is interleaved, so the result is NCHW by shape and NHWC in memory (`torch.channels_last`). Call
        `.contiguous()` where a consumer needs NCHW strides.
        """
        if self.resize == "pil":
            return self._call_planar(images)
        size = self.image_size
        # The per-channel factors repeated along one NHWC row (R G B R G B ...): the multiply-add then broadcasts over
        # rows and runs vectorised, which a size-3 innermost broadcast does not.
        row_scale, row_offset = self._scale.view(3).repeat(size), self._offset.view(3).repeat(size)
        pixels = torch.empty((len(images), size, size, 3), dtype=torch.float32)
        pixels_np = pixels.numpy()  # shares memory; numpy casts from the read-only PIL array without a copy or warning
        for index, image in enumerate(images):
            np.copyto(pixels_np[index], self._crop_view(image), casting="unsafe")  # uint8 -> float32, exact
            rows = pixels[index].view(size, 3 * size)
            torch.addcmul(row_offset, rows, row_scale, out=rows)  # x * scale + offset in float32, as in normalize
        return pixels.permute(0, 3, 1, 2)

    def _call_planar(self, images: list[Image.Image]) -> torch.Tensor:
        """`__call__` for resize="pil": each crop is resized into one reused planar buffer and normalised from there
        into its (3, S, S) slot of the batch."""
        size = self.image_size
        pixels = torch.empty((len(images), 3, size, size), dtype=torch.float32)
        scale, offset = self._scale.view(3, 1, 1), self._offset.view(3, 1, 1)
        # The crop lands in one reused buffer and is normalised into the batch: the batch's fresh pages are written
        # once, by the multiply-add.
        crop = torch.empty((3, size, size), dtype=torch.float32)
        for index, image in enumerate(images):
            rgb, resized_size, box = self.geometry(image)
            pillow_resize_crop(rgb_pixels(rgb), resized_size, box, out=crop.numpy())
            torch.addcmul(offset, crop, scale, out=pixels[index])  # x * scale + offset, as in normalize
        return pixels

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

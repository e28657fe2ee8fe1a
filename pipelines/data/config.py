"""PreprocessConfig: which LLaVA data become training shards, and how their rows become model inputs."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic import PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS, StrList
from pipelines.data.catalog import name_problem
from pipelines.data.image_identity import ImageIdentity
from pipelines.data.pixel_storage import (
    DEFAULT_STORAGE,
    PixelStorage,
    unsupported_storage,
)
from sp_core.image_options import (
    DEFAULT_ASPECT,
    DEFAULT_DECODING,
    DEFAULT_MAX_PIXELS,
    DEFAULT_RESIZE,
    ImageAspectOption,
    ImageDecodingOption,
    ImageResizeOption,
)

# The conversation templates of sp_core.conversation.TEMPLATES, named here so that the config loads without it.
TemplateName = Literal["plain", "vicuna_v1"]


@dataclass(config=OPTIONS)
class PreprocessConfig:
    data: StrList = field(default_factory=list)
    """LLaVA JSON arrays or JSON-lines files (paths or URIs); [] = the embedded synthetic set."""
    image_root: str = ""
    """The directory or URI the rows' "image" paths are relative to."""
    template: TemplateName = "vicuna_v1"
    """plain for stage-1 captions, vicuna_v1 for stage-2 conversations."""
    model: str = ""
    """The model dir or hub id whose tokenizer and image settings the shards are for; "" = the embedded tiny one."""
    output_dir: str = ""
    """Where data sets go; "" = $LLAVA_SP_HOME/data."""
    name: str = ""
    """A name for the data set, for data=<name> in training (the catalog in output_dir)."""
    image_aspect: ImageAspectOption = DEFAULT_ASPECT
    image_resize: ImageResizeOption = DEFAULT_RESIZE
    image_decoding: ImageDecodingOption = DEFAULT_DECODING
    strip_turns: bool = False
    """false: as the official code, only the <image> turn is stripped of surrounding whitespace; true: every turn."""
    image_identity: ImageIdentity = "stat"
    """How a finished row notices that its image changed: stat (size + modification time) or content (SHA-256)."""
    rebuild: bool = False
    """Redo every row, reusing nothing of an earlier run."""
    pixel_storage: PixelStorage = DEFAULT_STORAGE
    """How shards store the crops (the same pixels either way): webp (lossless, ~1.4x a photo's JPEG) or raw (~3x,
    faster to read)."""
    model_max_length: PositiveInt = 2048
    """Tokens per row after <image> expansion: longer rows are truncated as LLaVA does (never inside the image), and
    quarantined if no answer token is left."""
    max_image_pixels: PositiveInt = DEFAULT_MAX_PIXELS
    """Width x height over which an image is refused before decoding (decompression bombs; PIL's default)."""
    max_image_bytes: PositiveInt = 64 * 1024 * 1024
    """The size over which an image file is refused."""
    rows_per_chunk: PositiveInt = 2000
    """Rows per chunk, the unit of resumption; one chunk is held in the object store while written."""
    rows_per_batch: PositiveInt = 32
    """Rows per map_batches call."""
    blocks_per_chunk: PositiveInt = 8
    """Parallel tasks per chunk."""
    num_cpus_per_task: float = 1.0
    """CPUs Ray reserves for each task."""

    def __post_init__(self) -> None:
        problems = [problem for problem in (name_problem(self.name), unsupported_storage(self.pixel_storage))
                    if problem]
        if problems:
            raise ValueError("; ".join(problems))

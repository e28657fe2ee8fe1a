"""What the data stage needs from a model: its tokenizer, its image settings and its image-token count."""

from __future__ import annotations

from transformers import AutoConfig, AutoTokenizer

import sp_core.modeling  # noqa: F401  (registers model_type "llava_sp" for AutoConfig)
from pipelines.data.config import PreprocessConfig
from pipelines.data.rows import RowProcessor
from sp_core.image_processing import LlavaSPImageProcessor


def row_processor_for(config: PreprocessConfig, model: str) -> RowProcessor:
    model_config = AutoConfig.from_pretrained(model)
    image_tokens = getattr(model_config, "image_tokens_per_image", None) or model_config.image_seq_length
    tokenizer = AutoTokenizer.from_pretrained(model)
    image_processor = LlavaSPImageProcessor.from_pretrained_dir(
        model, aspect=config.image_aspect, resize=config.image_resize
    )
    return RowProcessor(
        tokenizer=tokenizer,
        image_processor=image_processor,
        template=config.template,
        image_root=config.image_root,
        image_tokens=image_tokens,
        model_max_length=config.model_max_length,
        max_image_pixels=config.max_image_pixels,
        max_image_bytes=config.max_image_bytes,
        image_decoding=config.image_decoding,
        strip_turns=config.strip_turns,
        image_identity=config.image_identity,
        pixel_storage=config.pixel_storage,
    )

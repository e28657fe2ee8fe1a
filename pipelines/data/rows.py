"""One staged LLaVA record -> one shard row, or one quarantine row with its reason. Never both, never neither.

`RowProcessor` is a plain picklable callable on pyarrow batches, run by Ray Data's map_batches; it holds the
tokenizer and the image settings of the model the shards are made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from pipelines.data.image_identity import ImageIdentity, parse_record, record_signature
from pipelines.data.pixel_storage import DEFAULT_STORAGE, PixelStorage, encode_crop
from pipelines.data.schema import OK, PROCESSED_SCHEMA, QUARANTINED
from pipelines.data.staging import INVALID_JSON
from pipelines.data.storage import UnsafeImagePath, read_bytes, safe_join
from sp_core.conversation import ConversationError, get_template, tokenize_conversation
from sp_core.image_decoding import ImageError, load_rgb_image
from sp_core.image_options import DEFAULT_DECODING, ImageDecoding
from sp_core.image_processing import LlavaSPImageProcessor

# Quarantine reasons beyond those of sp_core.conversation and sp_core.image_processing.
IMAGE_MISSING = "image_missing"
IMAGE_PATH_ESCAPES_ROOT = "image_path_escapes_root"
BAD_IMAGE_PATH = "bad_image_path"  # empty, or holding a control character such as NUL
IMAGE_TOO_LARGE = "image_too_large"
BAD_RECORD = "bad_record"
PROCESSING_ERROR = "processing_error"


class RowRejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class RowProcessor:
    tokenizer: PreTrainedTokenizerBase
    image_processor: LlavaSPImageProcessor
    template: str
    image_root: str
    image_tokens: int  # placeholders per image (n_spatial + grid^2)
    model_max_length: int
    max_image_pixels: int
    max_image_bytes: int
    image_decoding: ImageDecoding = DEFAULT_DECODING
    strip_turns: bool = False
    image_identity: ImageIdentity = "stat"
    pixel_storage: PixelStorage = DEFAULT_STORAGE

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns: dict[str, list[Any]] = {field.name: [] for field in PROCESSED_SCHEMA}
        for source, row, record in zip(
            batch.column("source").to_pylist(), batch.column("row").to_pylist(), batch.column("record").to_pylist()
        ):
            output = self.process(source, row, record)
            for name in columns:
                columns[name].append(output.get(name))
        return pa.table(columns, schema=PROCESSED_SCHEMA)

    def process(self, source: str, row: int, record_text: str) -> dict[str, Any]:
        record = parse_record(record_text)
        # Taken before the image is read: a file that changes while it is read then differs on the next run.
        signature = record_signature(record, self.image_root, self.image_identity)
        return {**self._result(source, row, record_text, record), "image_signature": signature}

    def _result(self, source: str, row: int, record_text: str, record: Any) -> dict[str, Any]:
        sample_id = f"{source.rsplit('/', 1)[-1]}:{row}"
        try:
            self._check(record_text, record)
            sample_id = str(record.get("id", sample_id))
            return self._sample(record, sample_id, source, row)
        except (RowRejected, ConversationError, ImageError) as rejection:  # each carries its quarantine reason
            return _quarantined(sample_id, source, row, rejection.reason, str(rejection))
        except Exception as error:  # an unforeseen failure still accounts for its row
            return _quarantined(sample_id, source, row, PROCESSING_ERROR, f"{type(error).__name__}: {error}")

    @staticmethod
    def _check(record_text: str, record: Any) -> None:
        if record_text.startswith(f"{INVALID_JSON}:"):
            raise RowRejected(INVALID_JSON, record_text.split(":", 1)[1])
        if not isinstance(record, dict):
            raise RowRejected(BAD_RECORD, f"a record must be a JSON object, got {type(record).__name__}")

    def _sample(self, record: dict[str, Any], sample_id: str, source: str, row: int) -> dict[str, Any]:
        has_image = "image" in record  # LLaVA: multimodal iff the row has an "image" key
        if has_image and not isinstance(record["image"], str):
            raise RowRejected(BAD_RECORD, f"'image' must be one relative path, got {record['image']!r}")
        tokens = tokenize_conversation(
            record.get("conversations"),
            self.tokenizer,
            get_template(self.template),
            has_image=has_image,
            image_tokens=self.image_tokens,
            model_max_length=self.model_max_length,
            strip_turns=self.strip_turns,
        )
        pixels = self._pixels(record["image"]) if has_image else None
        length = len(tokens.input_ids)
        return {
            "id": sample_id,
            "input_ids": tokens.input_ids,
            "labels": tokens.labels,
            "pixel_values": pixels,
            "pixel_encoding": self.pixel_storage if has_image else None,
            "has_image": has_image,
            "image_size": self.image_processor.image_size,
            "n_image_tokens": self.image_tokens if has_image else 0,
            "length": length,
            "modality_length": length if has_image else -length,
            "source": source,
            "row": row,
            "status": OK,
        }

    def _pixels(self, relative_path: str) -> bytes:
        if not relative_path.strip():
            raise RowRejected(BAD_IMAGE_PATH, "the image path is empty")
        control = next((character for character in relative_path if ord(character) < 32), None)
        if control is not None:
            raise RowRejected(BAD_IMAGE_PATH, f"the image path {relative_path!r} holds the control character "
                                              f"{control!r}, which no file name on the image root has")
        try:
            uri = safe_join(self.image_root, relative_path)
        except UnsafeImagePath as error:
            raise RowRejected(IMAGE_PATH_ESCAPES_ROOT, str(error)) from error
        try:
            data = read_bytes(uri, self.max_image_bytes)
        except (FileNotFoundError, IsADirectoryError) as error:
            raise RowRejected(IMAGE_MISSING, f"no image file at {uri}") from error
        except OSError as error:  # pyarrow reports a missing file as a plain OSError on some filesystems
            raise RowRejected(IMAGE_MISSING, f"cannot read {uri}: {error}") from error
        if len(data) > self.max_image_bytes:
            raise RowRejected(IMAGE_TOO_LARGE, f"{uri} is over max_image_bytes={self.max_image_bytes}")
        image = load_rgb_image(data, max_pixels=self.max_image_pixels, decoding=self.image_decoding)
        return encode_crop(self.image_processor.to_uint8(image), self.pixel_storage)


def _quarantined(sample_id: str, source: str, row: int, reason: str, detail: str) -> dict[str, Any]:
    return {"id": sample_id, "source": source, "row": row, "reason": reason, "detail": detail[:500],
            "status": QUARANTINED}

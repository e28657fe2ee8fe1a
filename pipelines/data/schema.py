"""Arrow schemas of the preprocessed shards and of the quarantine (the contract between preprocessing and training)."""

from __future__ import annotations

import pyarrow as pa

STAGED_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("record", pa.string())])

# One row per training sample. pixel_values holds the uint8 (S, S, 3) crop as pixel_encoding says (lossless WebP
# or the plain bytes, pipelines.data.pixel_storage), or is null for text-only samples; training normalises it.
SHARD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("pixel_values", pa.binary()),
        ("pixel_encoding", pa.string()),
        ("has_image", pa.bool_()),
        ("image_size", pa.int32()),
        ("n_image_tokens", pa.int32()),
        ("length", pa.int32()),
        ("modality_length", pa.int32()),  # +length for image samples, -length for text-only (LLaVA's grouping)
        ("source", pa.string()),
        ("row", pa.int64()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("reason", pa.string()), ("detail", pa.string())]
)

# What a processing task emits: shard columns + quarantine columns + the partition column + the signature of the
# row's image file when it was read ("" for a row without one; pipelines.data.image_identity).
PROCESSED_SCHEMA = pa.schema(
    list(SHARD_SCHEMA)
    + [("reason", pa.string()), ("detail", pa.string()), ("status", pa.string()), ("image_signature", pa.string())]
)
OK, QUARANTINED = "ok", "quarantined"

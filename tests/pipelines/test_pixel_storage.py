"""pipelines.data.pixel_storage: every encoding gives back the very pixels, and the training reader hands the
collator plain crops whatever the shard stores."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data.config import PreprocessConfig
from pipelines.data.pixel_storage import (
    CropDecodeError,
    decode_crop,
    encode_crop,
)
from pipelines.train.shards import TRAINING_COLUMNS, ShardRowReader
from tests.sp_core.make_clip_torchvision_reference import photo_like


@pytest.mark.parametrize("storage", ["webp", "raw"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stored_crop_decodes_to_the_same_pixels(storage, seed):
    crop = photo_like(48, 48, seed)
    stored = encode_crop(crop, storage)
    assert decode_crop(stored, storage, 48) == crop.tobytes()


def test_webp_is_smaller_than_the_plain_bytes_for_a_smooth_image():
    smooth = np.repeat(np.repeat(photo_like(12, 12, 3), 4, axis=0), 4, axis=1)  # 48 x 48 of 4 x 4 blocks
    assert len(encode_crop(smooth, "webp")) < len(encode_crop(smooth, "raw")) / 4


def test_a_crop_of_the_wrong_size_or_encoding_is_refused():
    crop = photo_like(8, 8, 0)
    with pytest.raises(CropDecodeError, match="holds 192 bytes, not the 9x9x3 its row says"):
        decode_crop(encode_crop(crop, "webp"), "webp", 9)
    with pytest.raises(CropDecodeError, match="unknown pixel_encoding 'png'; known: webp, raw"):
        decode_crop(b"", "png", 8)
    with pytest.raises(ValueError, match="pixel_storage\n  Input should be 'webp' or 'raw'"):
        PreprocessConfig(pixel_storage="png")


def test_webp_storage_is_refused_at_configuration_by_a_pillow_without_webp(monkeypatch):
    from PIL import features

    assert PreprocessConfig().pixel_storage == "webp"  # this Pillow has WebP
    real_check = features.check
    monkeypatch.setattr(features, "check", lambda feature: feature != "webp" and real_check(feature))
    with pytest.raises(ValueError, match="built without WebP support; use pixel_storage=raw"):
        PreprocessConfig()
    assert PreprocessConfig(pixel_storage="raw").pixel_storage == "raw"


def test_the_training_reader_returns_plain_crops_for_every_encoding(tmp_path):
    crops = [photo_like(16, 16, seed) for seed in range(3)]
    rows = {
        "id": ["webp", "raw", "text"], "input_ids": [[1, 2]] * 3, "labels": [[-100, 2]] * 3,
        "pixel_values": [encode_crop(crops[0], "webp"), encode_crop(crops[1], "raw"), None],
        "pixel_encoding": ["webp", "raw", None], "has_image": [True, True, False], "image_size": [16, 16, 16],
        "length": [2, 2, 2],
    }
    path = tmp_path / "chunk-00000-000.parquet"
    pq.write_table(pa.table({name: rows[name] for name in TRAINING_COLUMNS}), path)

    read = ShardRowReader()(pa.table({"position": [0, 1, 2], "file": [str(path)] * 3, "row_in_file": [2, 0, 1]}))

    assert read.column("id").to_pylist() == ["text", "webp", "raw"]
    assert read.column("pixel_values").to_pylist() == [None, crops[0].tobytes(), crops[1].tobytes()]
    assert read.column("pixel_encoding").to_pylist() == [None, "raw", "raw"]

"""Ray Data preprocessing on a real local Ray: every row lands in the shards or in quarantine with its reason."""

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.preprocess import run
from pipelines.data.config import PreprocessConfig
from pipelines.data.pixel_storage import decode_crop
from pipelines.data.preprocess import PreprocessResult
from sp_core.image_processing import LlavaSPImageProcessor

pytestmark = pytest.mark.integration

SMALL = (40, 30)
MAX_PIXELS = 100_000
MAX_LENGTH = 700  # 582 image tokens + a normal question/answer fit; a ~150-word question does not


def _png(colour, size=SMALL) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _qa(question="What colour is it?", answer="red", image=True):
    return [{"from": "human", "value": ("<image>\n" if image else "") + question}, {"from": "gpt", "value": answer}]


BAD_ROWS = {
    "missing": ({"image": "nope.png", "conversations": _qa()}, "image_missing"),
    "garbage": ({"image": "garbage.png", "conversations": _qa()}, "image_undecodable"),
    "truncated": ({"image": "truncated.png", "conversations": _qa()}, "image_truncated"),
    "bomb": ({"image": "big.png", "conversations": _qa()}, "image_too_large"),
    "escape": ({"image": "../outside.png", "conversations": _qa()}, "image_path_escapes_root"),
    "absolute": ({"image": "/etc/hostname", "conversations": _qa()}, "image_path_escapes_root"),
    "no_conv": ({"image": "red.png", "conversations": []}, "no_conversations"),
    "roles": ({"image": "red.png", "conversations": [_qa()[1], _qa()[0]]}, "roles_not_alternating"),
    "no_token": ({"image": "red.png", "conversations": _qa(image=False)}, "image_token_missing"),
    "stray_token": ({"conversations": _qa()}, "image_token_without_image"),
    "two_tokens": ({"image": "red.png", "conversations": _qa(question="<image> and <image>?")}, "too_many_image_tokens"),
    "empty": ({"image": "red.png", "conversations": _qa(answer="  ")}, "empty_text"),
    "too_long": ({"image": "red.png", "conversations": _qa(question="colour " * 150)}, "no_learnable_tokens"),
    "empty_path": ({"image": "", "conversations": _qa()}, "bad_image_path"),
    "nul_path": ({"image": "red.png\u0000.png", "conversations": _qa()}, "bad_image_path"),
    "number_answer": ({"image": "red.png", "conversations": _qa(answer=3)}, "turn_not_text"),
}


@pytest.fixture(scope="module")
def llava_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    images = root / "images"
    images.mkdir()
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, colour in colours.items():
        (images / f"{name}.png").write_bytes(_png(colour))
    (images / "garbage.png").write_bytes(b"this is not an image at all")
    (images / "truncated.png").write_bytes(_png((1, 2, 3), size=(300, 300))[:200])
    (images / "big.png").write_bytes(_png((9, 9, 9), size=(400, 400)))  # 160,000 px > MAX_PIXELS
    (root / "outside.png").write_bytes(_png((0, 0, 0)))

    good = [{"id": f"good-{name}", "image": f"{name}.png", "conversations": _qa(answer=name)} for name in colours]
    good.append({"id": "good-text", "conversations": _qa("Name a shape.", "circle", image=False)})
    bad = [dict(record, id=f"bad-{name}") for name, (record, _) in BAD_ROWS.items()]
    rows = [good[0], *bad[:6], good[1], *bad[6:], 42, good[2]]  # 42: not an object
    (root / "data.json").write_text(json.dumps(rows))
    lines = [json.dumps(good[3]), "{not json", ""]  # a blank line is not a row
    (root / "extra.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _config(llava_data, tiny_model_dir, output_dir, **overrides) -> PreprocessConfig:
    options = dict(data=[str(llava_data / "data.json"), str(llava_data / "extra.jsonl")],
                   image_root=str(llava_data / "images"), model=str(tiny_model_dir), output_dir=str(output_dir),
                   model_max_length=MAX_LENGTH, max_image_pixels=MAX_PIXELS, rows_per_chunk=5, blocks_per_chunk=2)
    options.update(overrides)
    return PreprocessConfig(**options)


def _quarantine(result):
    return pq.read_table(result.quarantine_dir).to_pylist()


@pytest.fixture(scope="module")
def first_run(ray_session, llava_data, tiny_model_dir, tmp_path_factory) -> tuple[PreprocessConfig, PreprocessResult]:
    """One run of llava_data that the tests below read: each run costs ~15 s of Ray Data start-up on 2 cores."""
    config = _config(llava_data, tiny_model_dir, tmp_path_factory.mktemp("preprocessed"))
    return config, run(config)


def test_every_row_is_written_or_quarantined_with_its_reason(first_run):
    _, result = first_run
    quarantine = {row["id"]: row for row in _quarantine(result)}
    expected = {f"bad-{name}": reason for name, (_, reason) in BAD_ROWS.items()}
    expected["data.json:18"] = "bad_record"  # the bare 42 (row 18) has no id
    expected["extra.jsonl:1"] = "invalid_json"
    assert {key: row["reason"] for key, row in quarantine.items()} == expected
    assert quarantine["bad-escape"]["source"].endswith("data.json") and quarantine["bad-escape"]["row"] == 5
    assert "../outside.png" in quarantine["bad-escape"]["detail"]

    shards = pq.read_table(result.shards_dir).to_pylist()
    assert sorted(row["id"] for row in shards) == ["good-blue", "good-green", "good-red", "good-text"]
    assert result.read == 22 == result.written + sum(result.quarantined.values())
    assert result.written == 4 and sum(result.quarantined.values()) == 18
    assert result.quarantined["image_path_escapes_root"] == 2 and result.quarantined["bad_image_path"] == 2
    assert "holds the control character '\\x00'" in quarantine["bad-nul_path"]["detail"]
    assert "turn 1 has a value of type int (3)" in quarantine["bad-number_answer"]["detail"]


def test_shard_rows_hold_expanded_tokens_and_the_uint8_crop(first_run, tiny_model_dir):
    _, result = first_run
    rows = {row["id"]: row for row in pq.read_table(result.shards_dir).to_pylist()}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    red = rows["good-red"]
    assert red["input_ids"].count(image_id) == red["n_image_tokens"] == 582
    assert red["length"] == len(red["input_ids"]) == len(red["labels"]) == red["modality_length"]
    learned = [token for token, label in zip(red["input_ids"], red["labels"]) if label != -100]
    assert tokenizer.decode(learned) == " red</s>"
    expected_crop = LlavaSPImageProcessor.from_pretrained_dir(tiny_model_dir).to_uint8(Image.new("RGB", SMALL, (255, 0, 0)))
    assert red["pixel_encoding"] == "webp"  # the default: lossless
    crop = np.frombuffer(decode_crop(red["pixel_values"], "webp", 336), dtype=np.uint8).reshape(336, 336, 3)
    assert np.array_equal(crop, expected_crop)
    text = rows["good-text"]
    assert text["pixel_values"] is None and text["pixel_encoding"] is None
    assert not text["has_image"] and text["n_image_tokens"] == 0
    assert text["modality_length"] == -text["length"] and image_id not in text["input_ids"]


def test_rerun_reuses_and_an_interrupted_run_resumes(first_run):
    config, first = first_run
    assert not first.reused and first.chunks_reused == 0
    # What a killed run leaves behind (a staging folder, a chunk's temporary output) goes with the next run.
    leftovers = [Path(config.output_dir) / f".staging-{first.dataset_dir.name}-killed",
                 first.dataset_dir / ".chunk-00001-ok-killed"]
    for leftover in leftovers:
        (leftover / "part.parquet").parent.mkdir(parents=True)
        (leftover / "part.parquet").write_bytes(b"half")
    again = run(config)
    assert again.reused and again.dataset_dir == first.dataset_dir
    assert not any(leftover.exists() for leftover in leftovers)
    assert (again.read, again.written, again.quarantined) == (first.read, first.written, first.quarantined)

    # Interrupt: the manifest and chunk 1's outputs were never written. (The resumed run restores them, so the
    # shared run is whole again for the tests after this one.)
    chunks = len(list((first.dataset_dir / "chunks").glob("*.json")))
    (first.dataset_dir / "manifest.json").unlink()
    (first.dataset_dir / "chunks" / "00001.json").unlink()
    for path in first.shards_dir.glob("chunk-00001-*.parquet"):
        path.unlink()
    kept = {path.name: os.stat(path).st_mtime_ns for path in first.shards_dir.glob("chunk-0000[02]-*.parquet")}
    resumed = run(config)
    assert not resumed.reused and resumed.chunks_reused == chunks - 1
    assert (resumed.read, resumed.written, resumed.quarantined) == (first.read, first.written, first.quarantined)
    assert {p.name: os.stat(p).st_mtime_ns for p in first.shards_dir.glob("chunk-0000[02]-*.parquet")} == kept
    assert sorted(r["id"] for r in pq.read_table(first.shards_dir).to_pylist()) == \
        ["good-blue", "good-green", "good-red", "good-text"]


def test_changed_config_gets_a_new_dataset(first_run):
    config, base = first_run
    # One chunk (chunking is first_run's test): every chunk costs a few seconds of Ray Data start-up.
    square = run(replace(config, image_aspect="square", rows_per_chunk=1000))
    assert square.dataset_dir != base.dataset_dir and not square.reused
    assert (square.read, square.written, square.quarantined) == (base.read, base.written, base.quarantined)


def test_the_resize_reference_is_a_shard_setting(llava_data, tiny_model_dir, tmp_path):
    from pipelines.data.model_inputs import row_processor_for
    from pipelines.data.preprocess import fingerprint

    keys = {}
    for resize in ("torch", "pil"):
        config = _config(llava_data, tiny_model_dir, tmp_path / "out", image_resize=resize)
        processor = row_processor_for(config, str(tiny_model_dir))
        assert processor.image_processor.resize == resize
        keys[resize] = fingerprint(config, processor, "same inputs")
    assert keys["torch"] != keys["pil"]
    with pytest.raises(ValueError, match="image_resize\n  Input should be 'torch' or 'pil'"):
        _config(llava_data, tiny_model_dir, tmp_path / "out", image_resize="cv2")


def test_image_root_may_be_a_uri(ray_session, llava_data, tiny_model_dir, tmp_path):
    result = run(_config(llava_data, tiny_model_dir, tmp_path / "out", image_root=f"file://{llava_data / 'images'}",
                         data=[f"file://{llava_data / 'data.json'}"], rows_per_chunk=1000))
    assert result.written == 3 and result.read == 20


def _one_chunk_config(root: Path, tiny_model_dir, **overrides) -> PreprocessConfig:
    options = dict(data=[str(root / "data.json")], image_root=str(root / "images"), model=str(tiny_model_dir),
                   output_dir=str(root / "out"), model_max_length=MAX_LENGTH, rows_per_chunk=3, blocks_per_chunk=1)
    return PreprocessConfig(**{**options, **overrides})


def _crop_colours(result: PreprocessResult) -> dict[str, tuple[int, ...]]:
    """id -> the colour at the centre of its stored crop."""
    return {row["id"]: tuple(np.frombuffer(decode_crop(row["pixel_values"], row["pixel_encoding"], 336), np.uint8)
                             .reshape(336, 336, 3)[168, 168])
            for row in pq.read_table(result.shards_dir).to_pylist() if row["has_image"]}


def test_an_image_that_appears_or_changes_makes_its_chunk_be_redone(ray_session, tiny_model_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(_png((255, 0, 0)))
    (images / "b.png").write_bytes(_png((0, 0, 255)))
    rows = [{"id": name, "image": f"{name}.png", "conversations": _qa()} for name in ("a", "b", "late")]
    rows.append({"id": "text", "conversations": _qa(image=False)})  # chunk 1 (3 rows per chunk), no image at all
    (tmp_path / "data.json").write_text(json.dumps(rows))
    config = _one_chunk_config(tmp_path, tiny_model_dir)

    first = run(config)
    assert first.quarantined == {"image_missing": 1} and first.written == 3

    (images / "late.png").write_bytes(_png((0, 255, 0)))  # the user fixes the missing image
    fixed = run(config)
    assert (fixed.written, fixed.quarantined, fixed.chunks_redone, fixed.chunks_reused) == (4, {}, 1, 1)
    assert fixed.image_changes == {"appeared": 1}
    assert "built (1 chunks redone (1 images appeared), 1 chunks reused)" in fixed.summary()
    assert _crop_colours(fixed)["late"] == (0, 255, 0)
    assert not pq.read_table(fixed.quarantine_dir).num_rows

    assert run(config).state() == "reused (images unchanged)"

    (images / "a.png").write_bytes(_png((10, 20, 30), size=(41, 30)))  # replaced by another picture
    changed = run(config)
    assert changed.image_changes == {"changed": 1} and _crop_colours(changed)["a"] == (10, 20, 30)
    (images / "b.png").unlink()
    vanished = run(config)
    assert vanished.image_changes == {"vanished": 1} and vanished.quarantined == {"image_missing": 1}

    rebuilt = run(replace(config, rebuild=True))
    assert rebuilt.state() == "rebuilt (rebuild=true)" and rebuilt.chunks_reused == 0
    assert (rebuilt.written, rebuilt.quarantined) == (vanished.written, vanished.quarantined)

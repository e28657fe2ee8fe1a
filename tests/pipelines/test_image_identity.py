"""pipelines.data.image_identity: what a row's image signature notices, and how a chunk's changes are counted.
(The whole rerun, chunks redone on a real Ray: tests/pipelines/test_preprocess.py.)"""

from __future__ import annotations

import json
import os

from pipelines.data.image_identity import (
    MISSING,
    compare,
    image_signature,
    parse_record,
    record_signature,
)


def test_stat_notices_a_rewrite_with_the_same_bytes_and_content_does_not(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"the same bytes")
    by_stat, by_content = image_signature(str(path), "stat"), image_signature(str(path), "content")
    os.utime(path, ns=(1, 1))  # the same bytes, another modification time
    assert image_signature(str(path), "stat") != by_stat
    assert image_signature(str(path), "content") == by_content and by_content.startswith("sha256:")
    path.write_bytes(b"other bytes!!!")  # the same size
    assert image_signature(str(path), "content") != by_content


def test_a_missing_file_or_a_folder_is_missing_and_a_record_without_a_usable_image_depends_on_no_file(tmp_path):
    assert image_signature(str(tmp_path / "nope.png"), "stat") == MISSING
    assert image_signature(str(tmp_path), "content") == MISSING
    root = str(tmp_path)
    for record in ({"conversations": []}, {"image": "../outside.png"}, {"image": ""}, {"image": "a\u0000.png"},
                   {"image": 3}):
        assert record_signature(parse_record(json.dumps(record)), root, "stat") == ""
    assert record_signature(parse_record("invalid_json: Expecting value"), root, "stat") == ""
    assert record_signature(parse_record(json.dumps({"image": "nope.png"})), root, "stat") == MISSING


def test_changes_are_counted_by_kind():
    recorded = {("a.json", 0): MISSING, ("a.json", 1): "10:1", ("a.json", 2): "10:1", ("a.json", 3): "10:1"}
    current = {("a.json", 0): "12:5", ("a.json", 1): MISSING, ("a.json", 2): "11:2", ("a.json", 3): "10:1"}
    assert compare(recorded, current) == {"appeared": 1, "vanished": 1, "changed": 1}
    assert compare(recorded, recorded) == {}

"""A row's image file is part of what decides its result: its signature is recorded when the row is processed, and a
later run redoes the chunks whose images changed, appeared or vanished since.

Two kinds of signature (`image_identity=`):

- "stat" (the default): size and modification time, one metadata call per image (a `stat`, or a HEAD on object
  stores). A file rewritten with the same size within the filesystem's timestamp resolution goes unnoticed.
- "content": the SHA-256 of the bytes, which reads every image on every run.

A row whose record names no usable image (no "image" key, bad JSON, an unsafe path) depends on no file: its
signature is "", and such rows are left out of the stored signatures.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.data.storage import UnsafeImagePath, resolve, safe_join

ImageIdentity = Literal["stat", "content"]
MISSING = "missing"
SIGNATURE_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("signature", pa.string())])


def parse_record(record_text: str) -> Any:
    """A staged record's JSON value; None for staging's invalid_json marker or a broken record."""
    try:
        return json.loads(record_text)
    except ValueError:
        return None


def record_image_uri(record: Any, image_root: str) -> str | None:
    """The image file a parsed record names, or None where it names none that could be read."""
    image = record.get("image") if isinstance(record, dict) else None
    if not isinstance(image, str) or not image.strip() or any(ord(character) < 32 for character in image):
        return None
    try:
        return safe_join(image_root, image)
    except UnsafeImagePath:
        return None


def image_signature(uri: str, identity: ImageIdentity) -> str:
    """"<size>:<mtime_ns>" or "sha256:<hex>" of the file at uri; "missing" where there is no file."""
    filesystem, path = resolve(uri)
    try:
        if identity == "content":
            digest = hashlib.sha256()
            with filesystem.open_input_stream(path) as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
            return f"sha256:{digest.hexdigest()}"
        info = filesystem.get_file_info(path)
    except (FileNotFoundError, IsADirectoryError):
        return MISSING
    except OSError:  # pyarrow reports a missing file as a plain OSError on some filesystems
        return MISSING
    if info.type != pafs.FileType.File:
        return MISSING
    return f"{info.size}:{info.mtime_ns}"


def record_signature(record: Any, image_root: str, identity: ImageIdentity) -> str:
    """The signature of the image a parsed record names, "" if it names none."""
    uri = record_image_uri(record, image_root)
    return "" if uri is None else image_signature(uri, identity)


class SignatureReader:
    """Ray Data callable: staged records (source, row, record) -> (source, row, signature) of the rows with an
    image."""

    def __init__(self, image_root: str, identity: ImageIdentity):
        self.image_root, self.identity = image_root, identity

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = {"source": [], "row": [], "signature": []}
        for source, row, record in zip(batch.column("source").to_pylist(), batch.column("row").to_pylist(),
                                       batch.column("record").to_pylist()):
            signature = record_signature(parse_record(record), self.image_root, self.identity)
            if signature:
                rows["source"].append(source)
                rows["row"].append(row)
                rows["signature"].append(signature)
        return pa.table(rows, schema=SIGNATURE_SCHEMA)


def signatures_by_row(table: pa.Table) -> dict[tuple[str, int], str]:
    """(source, row) -> signature: the rows' keys are unique across a data set's inputs."""
    return {(source, row): signature for source, row, signature in zip(
        table.column("source").to_pylist(), table.column("row").to_pylist(), table.column("signature").to_pylist())}


def compare(recorded: dict[tuple[str, int], str], current: dict[tuple[str, int], str]) -> Counter[str]:
    """How the recorded rows' images changed: counts of "appeared" (was missing, is there), "vanished", "changed"."""
    changes: Counter[str] = Counter()
    for key, then in recorded.items():
        now = current.get(key, then)
        if now == then:
            continue
        if then == MISSING:
            changes["appeared"] += 1
        elif now == MISSING:
            changes["vanished"] += 1
        else:
            changes["changed"] += 1
    return changes

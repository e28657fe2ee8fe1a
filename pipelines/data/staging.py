"""Stream LLaVA JSON arrays and JSON-lines into parquet chunks of raw records.

llava_v1_5_mix665k.json is one ~1 GB JSON array: it is parsed one element at a time (json.raw_decode over a
sliding buffer) so no process ever holds the whole file. Each record is kept as its JSON text so that rows of any
shape (including malformed ones, which are quarantined later) fit one schema.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data.schema import STAGED_SCHEMA
from pipelines.data.storage import open_input

_READ_BYTES = 1 << 20
_DECODER = json.JSONDecoder()
_LONGEST_CUT_TOKEN = 8  # characters of a literal, number or \\uXXXX escape that a read can cut, e.g. "fals"
INVALID_JSON = "invalid_json"


class InputFormatError(ValueError):
    """An input file that is neither a JSON array nor JSON-lines, or an array broken mid-way."""


@dataclass(frozen=True)
class StagedRecord:
    source: str
    row: int
    record: str  # the element as JSON text, or INVALID_JSON-prefixed text of a bad JSON-lines line


@dataclass
class StagedInput:
    chunks: list[Path]
    rows: int


def hash_inputs(uris: list[str]) -> str:
    """sha256 over the names and bytes of every input: a cheap raw pass that decides whether work can be reused."""
    hasher = hashlib.sha256()
    for uri in uris:
        hasher.update(f"\0{uri}\0".encode())
        with open_input(uri) as stream:
            while data := stream.read(_READ_BYTES):
                hasher.update(data)
    return hasher.hexdigest()


def _chunks_of_text(stream) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()  # a 1 MiB cut may split a multi-byte character
    while True:
        data = stream.read(_READ_BYTES)
        text = decoder.decode(data, final=not data)
        if text:
            yield text
        if not data:
            return


def iter_records(uri: str) -> Iterator[StagedRecord]:
    """Records of one LLaVA file in order, row numbers from 0. JSON arrays and JSON-lines are told apart by the
    first non-blank character."""
    with open_input(uri) as stream:
        pieces = _chunks_of_text(stream)
        buffer = ""
        for piece in pieces:
            buffer += piece
            if buffer.strip():
                break
        if buffer.startswith("\ufeff"):
            # json.load refuses it too (the official loader reads with json.load).
            raise InputFormatError(f"{uri}: the file starts with a UTF-8 byte order mark; save it as plain UTF-8")
        if buffer.lstrip().startswith("["):
            start = buffer.index("[") + 1
            yield from _iter_array(uri, buffer[start:], pieces, consumed=start)
        else:
            _refuse_one_object(uri, buffer)
            yield from _iter_lines(uri, buffer, pieces)


def _refuse_one_object(uri: str, buffer: str) -> None:
    """A file that opens with a JSON object spread over lines is one object (such as {"data": [...]}), not
    JSON-lines, whose records are one per line."""
    first_line = buffer.lstrip().split("\n", 1)[0]
    if not first_line.startswith("{"):
        return
    try:
        json.loads(first_line)
    except json.JSONDecodeError:
        if "\n" in buffer.lstrip():  # the line is complete, and it is not a whole record
            raise InputFormatError(
                f"{uri}: the file is a JSON object spread over lines, not LLaVA data: give a JSON array of records "
                "([{...}, ...]) or JSON-lines (one record per line)") from None


def _iter_array(uri: str, buffer: str, pieces: Iterator[str], consumed: int) -> Iterator[StagedRecord]:
    """The array's elements; `consumed` counts the characters before `buffer` (positions in errors are the file's)."""
    row, exhausted = 0, False
    while True:
        stripped = buffer.lstrip(" \t\r\n,")
        consumed += len(buffer) - len(stripped)
        buffer = stripped
        if buffer.startswith("]"):
            return
        try:
            element, end = _DECODER.raw_decode(buffer)
            # A number or literal at the very end of the buffer may continue in the next piece.
            complete = end < len(buffer) or exhausted
        except json.JSONDecodeError as error:
            cut = _may_continue(buffer, error)
            if exhausted and not buffer:
                raise InputFormatError(f"{uri}: the JSON array is not closed after element {row}") from error
            if exhausted and cut:
                raise InputFormatError(f"{uri}: the file ends inside element {row} of the JSON array (is it "
                                       "truncated?)") from error
            if exhausted or not cut:
                raise InputFormatError(f"{uri}: the JSON array is invalid near character {consumed + error.pos} "
                                       f"after element {row}: {error.msg}") from error
            complete = False
        if not complete:
            more = next(pieces, None)
            exhausted = more is None
            buffer += more or ""
            continue
        yield StagedRecord(uri, row, json.dumps(element, ensure_ascii=False))
        row += 1
        consumed += end
        buffer = buffer[end:]


def _may_continue(buffer: str, error: json.JSONDecodeError) -> bool:
    """Whether more text could still make the element valid: the decoder stopped inside a string that runs to the
    end of the buffer, or within the few characters of a number, literal or escape cut at its end. Anything else is
    a syntax error, reported at once rather than after reading the rest of a large file."""
    return error.msg.startswith("Unterminated string") or error.pos >= len(buffer.rstrip()) - _LONGEST_CUT_TOKEN


def _iter_lines(uri: str, buffer: str, pieces: Iterator[str]) -> Iterator[StagedRecord]:
    """JSON-lines: row = 0-based line number; blank lines are not records."""
    line_number, carry = 0, ""
    for piece in itertools.chain([buffer], pieces):
        carry += piece
        *lines, carry = carry.split("\n")
        for line in lines:
            if line.strip():
                yield StagedRecord(uri, line_number, _line_record(line))
            line_number += 1
    if carry.strip():
        yield StagedRecord(uri, line_number, _line_record(carry))


def _line_record(line: str) -> str:
    try:
        return json.dumps(json.loads(line), ensure_ascii=False)
    except json.JSONDecodeError as error:
        return f"{INVALID_JSON}:{error.msg} at column {error.colno}"


def stage_inputs(uris: list[str], staging_dir: Path, rows_per_chunk: int) -> StagedInput:
    """Write every record of every input into parquet chunks of at most rows_per_chunk rows."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    chunks: list[Path] = []
    batch: list[StagedRecord] = []
    total = 0

    def flush() -> None:
        if not batch:
            return
        path = staging_dir / f"chunk-{len(chunks):05d}.parquet"
        table = pa.table(
            {"source": [r.source for r in batch], "row": [r.row for r in batch], "record": [r.record for r in batch]},
            schema=STAGED_SCHEMA,
        )
        pq.write_table(table, path, row_group_size=256)
        chunks.append(path)
        batch.clear()

    for uri in uris:
        for record in iter_records(uri):
            batch.append(record)
            total += 1
            if len(batch) >= rows_per_chunk:
                flush()
    flush()
    return StagedInput(chunks, total)

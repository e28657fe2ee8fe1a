"""LLaVA data -> parquet shards with Ray Data, content-addressed and resumable, every row accounted for.

    dataset_dir = <output_dir>/<fingerprint of inputs + config + tokenizer + image settings>/
        staging/chunk-*.parquet      raw records, rows_per_chunk each
        shards/chunk-*-*.parquet     training rows (schema: pipelines.data.schema.SHARD_SCHEMA)
        quarantine/chunk-*.parquet   rejected rows: id, source, row, reason, detail
        chunks/<i>.json              per-chunk counts, written when chunk i is complete (the resume points)
        chunks/<i>.images.parquet    the signature of each row's image file when chunk i was processed
        manifest.json                the totals, written last: its presence means the dataset is complete

Re-running with the same inputs and config reuses every finished chunk whose images are unchanged
(pipelines.data.image_identity) and redoes the others: an interrupted run's unfinished chunks, and the chunks where
an image appeared, vanished or changed. rebuild=true redoes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from tqdm.auto import tqdm

from pipelines.data.catalog import register
from pipelines.data.config import PreprocessConfig
from pipelines.data.image_identity import (
    SIGNATURE_SCHEMA,
    SignatureReader,
    compare,
    signatures_by_row,
)
from pipelines.data.rows import RowProcessor
from pipelines.data.schema import OK, QUARANTINE_SCHEMA, QUARANTINED, SHARD_SCHEMA
from pipelines.data.staging import hash_inputs, stage_inputs

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump when the shard layout or row processing changes meaning
ROWS_PER_ROW_GROUP = 32


@dataclass
class PreprocessResult:
    dataset_dir: Path
    read: int
    written: int
    quarantined: dict[str, int]
    reused: bool  # the whole dataset was already complete, with unchanged images
    chunks_reused: int = 0
    chunks_redone: int = 0  # finished chunks processed again because their images changed
    image_changes: dict[str, int] = field(default_factory=dict)  # appeared / vanished / changed -> rows
    rebuilt: bool = False

    @property
    def shards_dir(self) -> Path:
        return self.dataset_dir / "shards"

    @property
    def quarantine_dir(self) -> Path:
        return self.dataset_dir / "quarantine"

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.quarantined.items())) or "none"
        return (f"read {self.read} = written {self.written} + quarantined {sum(self.quarantined.values())} "
                f"[{reasons}]; {self.state()}; shards: {self.shards_dir}")

    def state(self) -> str:
        """What this run reused, what it redid and why."""
        if self.rebuilt:
            return "rebuilt (rebuild=true)"
        if self.reused:
            return "reused (images unchanged)"
        changes = ", ".join(f"{count} images {kind}" for kind, count in sorted(self.image_changes.items()))
        redone = f"{self.chunks_redone} chunks redone ({changes}), " if self.chunks_redone else ""
        return f"built ({redone}{self.chunks_reused} chunks reused)"


def fingerprint(config: PreprocessConfig, processor: RowProcessor, input_sha256: str) -> str:
    """What the shards depend on: input bytes, options that change rows, tokenizer, image settings."""
    tokenizer = processor.tokenizer
    tokenizer_state = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else \
        json.dumps(tokenizer.get_vocab(), sort_keys=True)
    description = {
        "format": FORMAT_VERSION,
        "inputs": input_sha256,
        "image_root": config.image_root,
        "template": config.template,
        "strip_turns": config.strip_turns,
        "pixel_storage": config.pixel_storage,
        "image_decoding": config.image_decoding,
        "model_max_length": config.model_max_length,
        "max_image_pixels": config.max_image_pixels,
        "max_image_bytes": config.max_image_bytes,
        "image_processor": asdict(processor.image_processor),
        "image_tokens": processor.image_tokens,
        "tokenizer": hashlib.sha256(tokenizer_state.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def preprocess(config: PreprocessConfig, processor: RowProcessor) -> PreprocessResult:
    """Run (or reuse) the preprocessing of config.data; Ray must be initialised."""
    if not config.data:
        raise ValueError("no input files: set data=[...] (LLaVA JSON or JSON-lines)")
    from pipelines.defaults import home

    output_root = Path(config.output_dir).absolute() if config.output_dir else home() / "data"
    dataset_dir = output_root / fingerprint(config, processor, hash_inputs(config.data))[:20]
    manifest_path = dataset_dir / "manifest.json"
    _remove_leftovers(output_root, dataset_dir)
    if config.rebuild and dataset_dir.exists():
        shutil.rmtree(dataset_dir)
        logger.info("rebuild=true: removed %s", dataset_dir)
    staging_dir = dataset_dir / "staging"
    changes = _forget_chunks_with_changed_images(config, dataset_dir)
    if manifest_path.is_file() and not changes:
        if config.name:
            register(output_root, config.name, dataset_dir)
        return _result_from_manifest(dataset_dir, json.loads(manifest_path.read_text()), reused=True)
    manifest_path.unlink(missing_ok=True)

    if not staging_dir.is_dir():  # staging is deterministic: an interrupted run's staging is reused as is
        temporary = output_root / f".staging-{dataset_dir.name}-{uuid.uuid4().hex}"
        try:
            stage_inputs(config.data, temporary, config.rows_per_chunk)
            dataset_dir.mkdir(parents=True, exist_ok=True)
            temporary.rename(staging_dir)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)  # a failed staging leaves nothing behind
    chunks = sorted(staging_dir.glob("chunk-*.parquet"))

    totals: Counter[str] = Counter()
    read = written = reused_chunks = 0
    for index, chunk in enumerate(tqdm(chunks, desc="preprocess chunks", unit="chunk")):
        marker = dataset_dir / "chunks" / f"{index:05d}.json"
        if marker.is_file():
            counts = json.loads(marker.read_text())
            reused_chunks += 1
        else:
            counts = _process_chunk(config, processor, chunk, dataset_dir, index)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(counts))
        read += counts["read"]
        written += counts["written"]
        totals.update(counts["quarantined"])
        logger.info("chunk %d/%d: %s", index + 1, len(chunks), counts)

    if read != written + sum(totals.values()):
        raise RuntimeError(f"row accounting broke: read {read} != written {written} + quarantined {sum(totals.values())}")
    manifest = {"read": read, "written": written, "quarantined": dict(sorted(totals.items())),
                "config": asdict(config), "chunks": len(chunks), "shard_schema": SHARD_SCHEMA.names}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    if config.name:
        register(output_root, config.name, dataset_dir)
    return _result_from_manifest(dataset_dir, manifest, reused=False, chunks_reused=reused_chunks,
                                 chunks_redone=len(changes), image_changes=dict(sum(changes.values(), Counter())),
                                 rebuilt=config.rebuild)


def _forget_chunks_with_changed_images(config: PreprocessConfig, dataset_dir: Path) -> dict[int, Counter[str]]:
    """Drop the finished chunks whose images changed since they were processed, so that they are redone; returns
    each such chunk's changes. Reads every image's signature once (Ray Data, in parallel)."""
    markers = {int(path.stem): path for path in (dataset_dir / "chunks").glob("*.json")}
    staged = sorted((dataset_dir / "staging").glob("chunk-*.parquet"))
    finished = [path for index, path in enumerate(staged) if index in markers]
    if not finished:
        return {}
    reader = SignatureReader(config.image_root, config.image_identity)
    current = ray.data.read_parquet([str(path) for path in finished]).map_batches(
        reader, batch_format="pyarrow", num_cpus=config.num_cpus_per_task)
    now = signatures_by_row(pa.concat_tables([ray.get(ref) for ref in current.to_arrow_refs()]))
    changes: dict[int, Counter[str]] = {}
    for index in sorted(markers):
        recorded_path = _signatures_path(dataset_dir, index)
        recorded = pq.read_table(recorded_path) if recorded_path.is_file() else SIGNATURE_SCHEMA.empty_table()
        changed = compare(signatures_by_row(recorded), now)
        if changed:
            changes[index] = changed
            markers[index].unlink()
            logger.info("chunk %d is redone: its images changed since it was processed (%s)", index, dict(changed))
    return changes


def _signatures_path(dataset_dir: Path, index: int) -> Path:
    return dataset_dir / "chunks" / f"{index:05d}.images.parquet"


def _remove_leftovers(output_root: Path, dataset_dir: Path) -> None:
    """Temporary folders of this data set that a killed run left (a failed one removes its own)."""
    leftovers = [*output_root.glob(f".staging-{dataset_dir.name}-*"), *dataset_dir.glob(".chunk-*")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    if leftovers:
        logger.info("removed %d temporary folders of an interrupted run of %s", len(leftovers), dataset_dir)


def _process_chunk(config: PreprocessConfig, processor: RowProcessor, chunk: Path, dataset_dir: Path,
                   index: int) -> dict:
    staged_rows = pq.ParquetFile(chunk).metadata.num_rows
    processed = (
        ray.data.read_parquet(str(chunk))
        .repartition(max(1, min(config.blocks_per_chunk, staged_rows)))
        .map_batches(processor, batch_format="pyarrow", batch_size=config.rows_per_batch,
                     num_cpus=config.num_cpus_per_task)
        .materialize()  # held once, written twice: shards and quarantine
    )
    name = f"chunk-{index:05d}"
    shards_dir, quarantine_dir = dataset_dir / "shards", dataset_dir / "quarantine"
    _write_partition(processed, OK, SHARD_SCHEMA, shards_dir, name)
    _write_partition(processed, QUARANTINED, QUARANTINE_SCHEMA, quarantine_dir, name)
    _write_signatures(processed, _signatures_path(dataset_dir, index))
    written = sum(pq.ParquetFile(path).metadata.num_rows for path in shards_dir.glob(f"{name}-*.parquet"))
    reasons: Counter[str] = Counter()
    for path in quarantine_dir.glob(f"{name}-*.parquet"):
        reasons.update(pq.read_table(path, columns=["reason"]).column("reason").to_pylist())
    return {"read": staged_rows, "written": written, "quarantined": dict(sorted(reasons.items()))}


def _write_signatures(processed: ray.data.Dataset, path: Path) -> None:
    """The chunk's image signatures, for the next run to compare (a chunk's worth of short strings)."""
    tables = [ray.get(ref) for ref in processed.select_columns(["source", "row", "image_signature"]).to_arrow_refs()]
    table = pa.concat_tables(tables).rename_columns(SIGNATURE_SCHEMA.names).cast(SIGNATURE_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.filter(pc.not_equal(table.column("signature"), "")), path)


def _select(table: pa.Table, status: str, schema: pa.Schema) -> pa.Table:
    return table.filter(pc.equal(table.column("status"), status)).select(schema.names).cast(schema)


def _write_partition(processed: ray.data.Dataset, status: str, schema: pa.Schema, directory: Path, name: str) -> None:
    """Write one status's rows as <directory>/<name>-<k>.parquet, replacing leftovers of an interrupted run."""
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob(f"{name}-*.parquet"):
        leftover.unlink()
    temporary = directory.parent / f".{name}-{status}-{uuid.uuid4().hex}"
    try:
        # Small row groups: training reads planned rows by random access, a row group at a time.
        processed.map_batches(_select, batch_format="pyarrow", fn_args=(status, schema), num_cpus=0.5).write_parquet(
            str(temporary), row_group_size=ROWS_PER_ROW_GROUP)
        for part, path in enumerate(sorted(temporary.glob("*.parquet"))):
            if pq.ParquetFile(path).metadata.num_rows:
                path.rename(directory / f"{name}-{part:03d}.parquet")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _result_from_manifest(dataset_dir: Path, manifest: dict, reused: bool, chunks_reused: int = 0,
                          chunks_redone: int = 0, image_changes: dict[str, int] | None = None,
                          rebuilt: bool = False) -> PreprocessResult:
    return PreprocessResult(dataset_dir, manifest["read"], manifest["written"], dict(manifest["quarantined"]),
                            reused=reused, chunks_reused=chunks_reused, chunks_redone=chunks_redone,
                            image_changes=image_changes or {}, rebuilt=rebuilt)

"""Where training rows live: the shard index, and the reader that fetches planned rows from the shards.

Workers stream their rows through Ray Data (ray.train.get_dataset_shard): each worker's dataset is its slice of the
TrainingPlan (a small table of file + row numbers), mapped to shard rows by `ShardRowReader`, which reads only the
parquet row groups that hold them. Order is preserved, so step k is the same micro-batches on every run.

No torch here: ShardRowReader runs in Ray Data tasks, which then need not import it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.data.pixel_storage import decode_crop

TRAINING_COLUMNS = ["id", "input_ids", "labels", "pixel_values", "pixel_encoding", "has_image", "image_size", "length"]


def shard_files(dataset_dir: str | Path) -> list[Path]:
    files = sorted((Path(dataset_dir) / "shards").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no shards in {Path(dataset_dir) / 'shards'}: run jobs/preprocess.py first")
    return files


def shard_index(dataset_dir: str | Path) -> pa.Table:
    """One row per training sample: file, row_in_file, modality_length (read without touching the pixels).

    Sorted by (source, row): Ray Data writes rows in whatever order its tasks finish, and the training plan (so the
    run itself) must depend on the data, not on how one preprocessing run happened to lay it out.
    """
    pieces = []
    for path in shard_files(dataset_dir):
        piece = pq.read_table(path, columns=["modality_length", "source", "row"])
        pieces.append(piece.append_column("file", pa.array([str(path)] * piece.num_rows))
                      .append_column("row_in_file", pa.array(np.arange(piece.num_rows, dtype=np.int64))))
    table = pa.concat_tables(pieces).sort_by([("source", "ascending"), ("row", "ascending")])
    table = table.select(["file", "row_in_file", "modality_length"])
    return table.set_column(2, "modality_length", pc.cast(table.column("modality_length"), pa.int64()))


def mixed_index(sources: dict[str, float], seed: int) -> pa.Table:
    """The shard index of several data sets, each weighted: its rows appear int(weight) times, plus a seeded subset
    of round(fraction x rows) of them (the same subset every epoch). One data set at weight 1 is its own index."""
    pieces = []
    for order, (dataset_dir, weight) in enumerate(sources.items()):
        index = shard_index(dataset_dir)
        copies, fraction = int(weight), weight - int(weight)
        rows = [np.arange(index.num_rows)] * copies
        if fraction:
            rng = np.random.default_rng([seed, order])
            rows.append(np.sort(rng.choice(index.num_rows, round(fraction * index.num_rows), replace=False)))
        pieces.append(index.take(pa.array(np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))))
    return pa.concat_tables(pieces)


@functools.lru_cache(maxsize=256)
def _row_group_starts(path: str) -> np.ndarray:
    metadata = pq.ParquetFile(path).metadata
    return np.cumsum([0] + [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])


class ShardRowReader:
    """Ray Data batch function: a batch of (position, file, row_in_file) -> those shard rows, in the same order, with
    each crop's pixel_values as its plain (S, S, 3) bytes whatever encoding the shard stores."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        files = np.asarray(batch.column("file").to_pylist())
        rows = batch.column("row_in_file").to_numpy()
        pieces: list[pa.Table] = []
        for path in dict.fromkeys(files.tolist()):
            selected = np.flatnonzero(files == path)
            wanted = rows[selected]
            starts = _row_group_starts(path)
            group_of = np.searchsorted(starts, wanted, side="right") - 1
            groups = np.unique(group_of).tolist()
            table = pq.ParquetFile(path).read_row_groups(groups, columns=TRAINING_COLUMNS)
            sizes = [int(starts[g + 1] - starts[g]) for g in groups]
            base_of = dict(zip(groups, np.cumsum([0] + sizes[:-1]).tolist()))
            local = [base_of[int(g)] + int(r - starts[g]) for g, r in zip(group_of, wanted)]
            pieces.append(table.take(pa.array(local)).append_column(
                "position", batch.column("position").take(pa.array(selected))))
        return _with_plain_pixels(pa.concat_tables(pieces).sort_by("position"))


def _with_plain_pixels(rows: pa.Table) -> pa.Table:
    encodings = rows.column("pixel_encoding").to_pylist()
    if all(encoding in (None, "raw") for encoding in encodings):
        return rows
    sizes = rows.column("image_size").to_pylist()
    plain = [None if data is None else decode_crop(data, encoding, size)
             for data, encoding, size in zip(rows.column("pixel_values").to_pylist(), encodings, sizes)]
    rows = rows.set_column(rows.schema.get_field_index("pixel_values"), "pixel_values", pa.array(plain, pa.binary()))
    return rows.set_column(rows.schema.get_field_index("pixel_encoding"), "pixel_encoding",
                           pa.array([None if data is None else "raw" for data in plain], pa.string()))

import numpy as np
import pytest

from pipelines.train.plan import make_plan, modality_length_grouped_order


def _lengths(images: int, texts: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(600, 700, images), -rng.integers(20, 120, texts)])


def test_one_epoch_visits_every_sample_once_and_never_mixes_modalities_in_a_megabatch():
    lengths = _lengths(37, 13)
    order = modality_length_grouped_order(lengths, batch_size=2, world=2, rng=np.random.default_rng(1))
    assert sorted(order) == list(range(50))
    full = order[: len(order) - (37 % 4 + 13 % 4)]  # the last megabatch holds both modalities' leftovers
    for start in range(0, len(full), 4):
        signs = {np.sign(lengths[i]) for i in full[start : start + 4]}
        assert len(signs) == 1


def test_samples_inside_a_megabatch_are_dealt_evenly_by_length():
    lengths = np.array([100, 90, 80, 70, 60, 50, 40, 30])
    order = modality_length_grouped_order(lengths, batch_size=4, world=2, rng=np.random.default_rng(0))
    first, second = order[:4], order[4:]
    assert abs(lengths[first].sum() - lengths[second].sum()) <= 20


def test_plan_is_deterministic_equal_per_worker_and_loses_no_sample():
    lengths = _lengths(30, 7)
    plan = make_plan(lengths, workers=2, micro_batch=3, accumulation=2, epochs=2, seed=5)
    again = make_plan(lengths, workers=2, micro_batch=3, accumulation=2, epochs=2, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(plan.per_worker, again.per_worker))
    assert len(plan.per_worker[0]) == len(plan.per_worker[1]) == plan.steps * 6
    assert plan.steps == 8  # each epoch of 37 is completed to 4 whole steps of 12 from its own start
    seen = np.concatenate(plan.per_worker)
    assert set(seen.tolist()) == set(range(37))
    other = make_plan(lengths, workers=2, micro_batch=3, accumulation=2, epochs=2, seed=6)
    assert not np.array_equal(other.per_worker[0], plan.per_worker[0])


def test_micro_batches_are_dealt_round_robin_so_the_global_step_is_layout_independent():
    """2 workers x 1 accumulation and 1 worker x 2 accumulation train on the same samples in each step."""
    lengths = _lengths(20, 4)
    parallel = make_plan(lengths, workers=2, micro_batch=2, accumulation=1, epochs=1, seed=3)
    accumulated = make_plan(lengths, workers=1, micro_batch=2, accumulation=2, epochs=1, seed=3)
    assert parallel.steps == accumulated.steps == 6
    for step in range(6):
        together = np.concatenate([w[step * 2 : step * 2 + 2] for w in parallel.per_worker])
        assert sorted(together.tolist()) == sorted(accumulated.per_worker[0][step * 4 : step * 4 + 4].tolist())


def test_max_steps_and_empty_data():
    plan = make_plan(_lengths(40, 0), workers=2, micro_batch=2, accumulation=1, epochs=3, seed=0, max_steps=5)
    assert plan.steps == 5 and len(plan.per_worker[0]) == 10
    with pytest.raises(ValueError, match="no rows"):
        make_plan(np.array([], dtype=np.int64), workers=1, micro_batch=1, accumulation=1, epochs=1, seed=0)


@pytest.mark.parametrize(("steps", "rows"), [(450, 444), (20, 400), (2000, 444), (7, 3)])
def test_max_steps_runs_as_many_epochs_as_it_takes(steps, rows):
    lengths = np.where(np.arange(rows) % 10 == 0, -50, 600)  # one text-only row in ten, as in the synthetic set
    plan = make_plan(lengths, 2, 2, 1, 1, 42, steps)
    assert plan.steps == steps  # one epoch of 444 rows is 111 steps: the demo's 450-step stage 2 once stopped there


def _write_shards(directory, layout: list[list[tuple[str, int, int]]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "shards").mkdir(parents=True)
    for number, rows in enumerate(layout):
        sources, positions, lengths = zip(*rows)
        pq.write_table(pa.table({"source": list(sources), "row": list(positions), "modality_length": list(lengths)}),
                       directory / "shards" / f"chunk-00000-{number:03d}.parquet")


def test_the_shard_index_follows_the_input_rows_not_the_order_ray_wrote_them(tmp_path):
    from pipelines.train.shards import shard_index

    rows = [("a.json", 0, 5), ("a.json", 1, -3), ("a.json", 2, 7), ("b.json", 0, 9), ("b.json", 1, -4)]
    _write_shards(tmp_path / "one", [rows[3:], rows[:3]])
    _write_shards(tmp_path / "two", [[rows[2], rows[0]], [rows[4], rows[1], rows[3]]])
    one, two = shard_index(tmp_path / "one"), shard_index(tmp_path / "two")
    assert one.column("modality_length").to_pylist() == two.column("modality_length").to_pylist() == [5, -3, 7, 9, -4]
    assert one.column("row_in_file").to_pylist() == [0, 1, 2, 0, 1]
    assert two.column("row_in_file").to_pylist() == [1, 1, 0, 2, 0]
    assert [path.rsplit("-", 1)[1] for path in two.column("file").to_pylist()] == ["000.parquet", "001.parquet",
                                                                                    "000.parquet", "001.parquet",
                                                                                    "001.parquet"]


def test_a_workers_plan_is_cut_into_blocks_of_whole_steps_that_keep_its_order():
    import pyarrow as pa

    from pipelines.train.config import TrainConfig
    from pipelines.train.launch import plan_blocks

    table = pa.table({"position": list(range(1000))})
    config = TrainConfig(micro_batch_size=4, gradient_accumulation_steps=2)
    blocks = plan_blocks(table, config, steps=16)
    assert [block.num_rows for block in blocks] == [128] * 7 + [104]
    assert pa.concat_tables(blocks).column("position").to_pylist() == list(range(1000))


@pytest.mark.parametrize(("image_size", "micro_batch", "accumulation", "steps"),
                         [(112, 8, 1, 445), (336, 16, 1, 24), (336, 4, 2, 49), (4096, 64, 4, 1)])
def test_a_read_block_holds_whole_steps_within_its_byte_budget(image_size, micro_batch, accumulation, steps):
    from pipelines.train.config import TrainConfig
    from pipelines.train.launch import READ_BLOCK_BYTES, steps_per_block

    config = TrainConfig(micro_batch_size=micro_batch, gradient_accumulation_steps=accumulation)
    step_bytes = 3 * image_size * image_size * micro_batch * accumulation
    assert steps_per_block(config, image_size) == steps
    assert steps == 1 or steps * step_bytes <= READ_BLOCK_BYTES < (steps + 1) * step_bytes

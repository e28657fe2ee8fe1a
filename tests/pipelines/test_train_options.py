"""Trainer options without a cluster: the learning-rate schedules and what each precision asks of DeepSpeed."""

import pytest
import torch

from pipelines.train.config import TrainConfig
from pipelines.train.launch import deepspeed_config
from pipelines.train.loop import make_scheduler
from pipelines.train.model_setup import (
    PRECISION_DTYPES,
    deepspeed_precision,
    resolve_precision,
)


def _learning_rates(schedule: str, steps: int = 10) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, TrainConfig(lr=1.0, warmup_ratio=0.2, lr_scheduler=schedule), steps)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_every_schedule_warms_up_linearly_then_follows_its_shape():
    cosine, linear, constant = (_learning_rates(name) for name in ("cosine", "linear", "constant"))
    for rates in (cosine, linear, constant):
        assert rates[:3] == [0.0, 0.5, 1.0]  # two warmup steps (20 % of 10)
    assert constant[2:] == [1.0] * 8
    assert linear[2:] == pytest.approx([1.0 - step / 8 for step in range(8)])
    assert cosine[6] == pytest.approx(0.5) and cosine[4] > linear[4] and cosine[8] < linear[8]
    with pytest.raises(ValueError, match="lr_scheduler\n  Input should be 'cosine', 'linear' or 'constant'"):
        TrainConfig(lr_scheduler="step")


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_each_precision_is_what_deepspeed_and_the_weights_are_set_to(precision):
    driver_settings = deepspeed_config(TrainConfig(precision=precision), hidden_size=64)
    assert driver_settings["bf16"] == {"enabled": "auto"}  # left to the workers, which know their hardware
    settings = deepspeed_precision(driver_settings, resolve_precision(TrainConfig(precision=precision)))
    assert settings["bf16"]["enabled"] == (precision == "bf16")
    assert settings["fp16"]["enabled"] == (precision == "fp16")
    if precision == "fp16":
        assert settings["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert PRECISION_DTYPES[resolve_precision(TrainConfig(precision=precision))] == {
        "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    assert resolve_precision(TrainConfig(precision="auto", use_gpu=False)) == "fp32"


def _shards(directory, rows: int, source: str):
    """A data set folder with one shard holding the index columns the plan reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"modality_length": list(range(1, rows + 1)), "source": [source] * rows,
                             "row": list(range(rows))}), directory / "shards" / "part-0.parquet")
    return str(directory)


def test_a_mix_weights_each_data_set_by_repeating_or_subsampling_its_rows(tmp_path):
    from pipelines.train.shards import mixed_index, shard_index

    first, second = _shards(tmp_path / "a", 10, "a.json"), _shards(tmp_path / "b", 8, "b.json")
    assert mixed_index({first: 1.0}, seed=0).equals(shard_index(first))
    mix = mixed_index({first: 2.0, second: 0.5}, seed=0)
    files = mix.column("file").to_pylist()
    assert files.count(str(tmp_path / "a" / "shards" / "part-0.parquet")) == 20  # every row twice
    half = [row for row, file in zip(mix.column("row_in_file").to_pylist(), files) if "/b/" in file]
    assert len(half) == 4 == len(set(half))  # a seeded half, no row twice
    assert mixed_index({first: 2.0, second: 0.5}, seed=0).equals(mix)
    assert not mixed_index({first: 2.0, second: 0.5}, seed=1).equals(mix)
    with pytest.raises(ValueError, match="give data or data_mix, not both"):
        TrainConfig(data="x", data_mix={"y": 1.0})
    with pytest.raises(ValueError, match="data_mix.y\n  Input should be greater than 0"):
        TrainConfig(data_mix={"y": 0})


def test_deepspeeds_private_op_table_still_holds_the_shared_memory_op_that_cpu_workers_skip():
    """pipelines/train/deepspeed_cpu.py writes into this private table; when DeepSpeed changes it, this fails."""
    import importlib
    import inspect

    import deepspeed.ops

    from pipelines.train.deepspeed_cpu import SHM_OP

    communication = importlib.import_module("deepspeed.comm.torch")  # the attribute "torch" of deepspeed.comm is torch
    assert SHM_OP in deepspeed.ops.__compatible_ops__
    assert "__compatible_ops__" in inspect.getsource(communication.build_shm_op)

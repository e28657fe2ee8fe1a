"""A backpressured Ray Data executor must not spin a core in the process that consumes it (a training worker)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from pipelines.data import idle_pause
from pipelines.data.idle_pause import (
    IDLE_PAUSE_S,
    MAX_IDLE_PAUSE_S,
    PauseWhenIdle,
    pause_when_idle,
)

ROWS_PER_BLOCK = 100
BLOCKS = 60


def _fat(batch: pa.Table) -> pa.Table:
    return batch.append_column("image", pa.array([b"\0" * 10_000] * batch.num_rows, pa.binary()))


def _backpressured_iterator(ray_session, pause: bool):
    """A dataset whose consumer has taken one batch and stopped, with far more to produce than its budget allows."""
    from ray.data import ExecutionResources

    blocks = [pa.table({"x": np.arange(i * ROWS_PER_BLOCK, (i + 1) * ROWS_PER_BLOCK)}) for i in range(BLOCKS)]
    dataset = ray_session.data.from_arrow(blocks).map_batches(
        _fat, batch_format="pyarrow", batch_size=None, num_cpus=0.25, compute=ray_session.data.TaskPoolStrategy(size=1))
    dataset.context.execution_options.resource_limits = ExecutionResources(object_store_memory=20e6)
    if pause:
        dataset = pause_when_idle(dataset)
    batches = iter(dataset.iter_batches(batch_size=8, batch_format="pyarrow", prefetch_batches=1))
    next(batches)
    time.sleep(2)  # production reaches its budget
    return batches


def _cpu_seconds_while_idle(seconds: float) -> float:
    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


@pytest.mark.parametrize("pause", [True, False], ids=["paused", "unpaused"])
def test_an_idle_backpressured_executor_leaves_the_core_alone_and_still_delivers_every_row(ray_session, pause):
    batches = _backpressured_iterator(ray_session, pause)
    idle_cpu = _cpu_seconds_while_idle(2.0)
    rows = 8 + sum(batch.num_rows for batch in batches)
    assert rows == BLOCKS * ROWS_PER_BLOCK
    if pause:
        assert idle_cpu < 0.25, f"the consumer process used {idle_cpu:.2f} s of CPU in 2 s while it consumed nothing"
    else:
        # What PauseWhenIdle is for: Ray Data's loop spins while backpressured. If a Ray upgrade stops it, this
        # fails, and idle_pause can go.
        assert idle_cpu > 1.0, f"Ray Data no longer spins while backpressured ({idle_cpu:.2f} s in 2 s)"


def test_pause_when_idle_registers_once_and_only_on_that_dataset(ray_session):
    dataset = ray_session.data.range(10)
    other = ray_session.data.range(10)
    pause_when_idle(pause_when_idle(dataset))
    assert dataset.context.custom_execution_callback_classes.count(PauseWhenIdle) == 1
    assert PauseWhenIdle not in other.context.custom_execution_callback_classes


class _Clock:
    """Stands in for the time module inside idle_pause: sleeping advances it, and nothing else does."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_pause_doubles_while_idle_up_to_its_cap_and_restarts_after_a_step_that_waited(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(idle_pause, "time", clock)
    callback = PauseWhenIdle()
    for _ in range(7):  # idle steps: each follows the last at once
        callback.on_execution_step(None)
    assert clock.sleeps == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.32, 0.32])
    assert (IDLE_PAUSE_S, MAX_IDLE_PAUSE_S) == (0.02, 0.32)

    clock.sleeps.clear()
    clock.now += 0.1  # this step waited on a task in ray.wait()
    callback.on_execution_step(None)
    assert clock.sleeps == []
    callback.on_execution_step(None)
    callback.on_execution_step(None)
    assert clock.sleeps == pytest.approx([0.02, 0.04])


def test_the_session_ray_is_on_one_machine_where_the_pause_applies(ray_session):
    from pipelines.runtime import on_one_machine

    assert on_one_machine()  # and a multi-node cluster is not: tests/pipelines/test_train_multinode.py

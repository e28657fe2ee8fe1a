"""Works around Ray Data's streaming executor (Ray 2.60) spinning while every operator is backpressured.

The executor's scheduling loop waits in ray.wait() only while some task is in flight; when the consumer has not taken
what was produced, the loop runs again at once, thousands of times a second, a core of Python in the consuming
process (a training worker), holding the GIL against it. PauseWhenIdle, an execution callback, sleeps after a loop
step that waited on nothing: IDLE_PAUSE_S after the first such step, doubling for each further one in a row up to
MAX_IDLE_PAUSE_S, so that a short lull costs little and a long one wakes the loop a few times a second.

Applied where it was measured to help: a Ray on one machine (pipelines.runtime.on_one_machine), where the spinning
loop takes a core that training needs (docs/benchmarks.md). Execution callbacks have no public base class yet:
ExecutionCallback is imported from Ray Data's internals, here only. tests/pipelines/test_idle_pause.py fails when a
Ray upgrade stops the spinning (then this module can go) or changes the callback.
"""

from __future__ import annotations

import time

import ray.data
from ray.data._internal.execution.execution_callback import (
    ExecutionCallback,  # [ray] no public base class yet
)

# A step shorter than this did not wait on ray.wait(): nothing was in flight.
WAITED_STEP_S = 0.002
IDLE_PAUSE_S = 0.02
MAX_IDLE_PAUSE_S = 0.32


class PauseWhenIdle(ExecutionCallback):
    def __init__(self) -> None:
        self._last_step_end = time.perf_counter()
        self._pause_s = IDLE_PAUSE_S

    def on_execution_step(self, executor) -> None:
        if time.perf_counter() - self._last_step_end < WAITED_STEP_S:
            time.sleep(self._pause_s)
            self._pause_s = min(2 * self._pause_s, MAX_IDLE_PAUSE_S)
        else:
            self._pause_s = IDLE_PAUSE_S
        self._last_step_end = time.perf_counter()


def pause_when_idle(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """The dataset, with PauseWhenIdle in the executor that runs it (in whichever process iterates it)."""
    _add_to(dataset.context)
    return dataset


def pause_when_idle_by_default() -> None:
    """PauseWhenIdle in every dataset this process creates from now on (each copies the current DataContext): the
    driver's preprocessing waits for CPUs held by training beside it, which also leaves its executor idle."""
    _add_to(ray.data.DataContext.get_current())


def _add_to(context: ray.data.DataContext) -> None:
    if PauseWhenIdle not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(PauseWhenIdle)

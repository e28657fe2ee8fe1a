"""Keep a backpressured Ray Data executor from spinning.

Ray Data's streaming executor (Ray 2.60) waits in ray.wait() only while some task is in flight. When every operator
is backpressured (the consumer has not taken enough of what was produced), its scheduling loop runs again at once,
thousands of times a second: one core of Python in the consuming process, which also holds the GIL against it.

That is the normal state of a training worker's dataset: it reads far faster than steps consume. Measured on 2
cores: a backpressured dataset's consumer process used 9.4 s of CPU in 10 s while its own thread slept; two 1000-step
runs side by side took 200-400 ms per step until their datasets had produced their last block, and 70-100 ms after.

PauseWhenIdle is an execution callback that sleeps after a loop step that did not wait on any task. A step with
tasks in flight waits in ray.wait() until they finish or 100 ms pass, so it is never paused. The first idle step is
followed by IDLE_PAUSE_S of sleep, and each further idle step in a row by twice the last pause, up to MAX_IDLE_PAUSE_S:
a short lull (a task that had already finished when the step asked, a pipeline of many tiny tasks) costs at most
IDLE_PAUSE_S, while a long one (a training worker's dataset, backpressured for the seconds its consumer spends on a
block of hundreds of steps) wakes a few times a second instead of fifty. Each wake-up is a full scheduling step, about 1.5 ms
of Python on the consumer's GIL: at a fixed 20 ms pause that was 7% of a core in every training worker (measured with
three runs side by side on 2 cores), which is what the growing pause takes back. A resumed consumer waits at most
MAX_IDLE_PAUSE_S for the next task to be dispatched; a training worker's next block is already read by then.
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

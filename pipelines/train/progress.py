"""A training run's progress bar on the driver: its steps and loss, read from the run's MLflow metrics (which rank 0
logs every log_every steps) while trainer.fit() runs. The workers' own output stays in Ray's log files."""

from __future__ import annotations

import threading
from types import TracebackType

from tqdm.auto import tqdm

POLL_S = 2.0


class TrainingProgress:
    """with TrainingProgress(uri, run_id, name, total_steps): trainer.fit()"""

    def __init__(self, uri: str, run_id: str, name: str, total_steps: int, poll_s: float = POLL_S):
        from mlflow import MlflowClient

        self.client, self.run_id, self.poll_s = MlflowClient(uri), run_id, poll_s
        self.bar = tqdm(total=total_steps, desc=name, unit="step", dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"progress-{name}", daemon=True)

    def __enter__(self) -> TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self.update()
        self.bar.close()

    def update(self) -> None:
        """Move the bar to the last logged step."""
        history = self.client.get_metric_history(self.run_id, "loss")
        if not history:
            return
        last = max(history, key=lambda metric: metric.step)
        self.bar.set_postfix(loss=f"{last.value:.4f}", refresh=False)  # one refresh per poll: steps and loss
        self.bar.n = last.step + 1
        self.bar.refresh()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.update()
            except Exception:  # the bar is a convenience: a store that is briefly unreachable must not fail the run
                continue

"""A training worker killed mid-run (SIGKILL by pid): Ray replaces it, training resumes from the last checkpoint,
and the steps it runs again compute the same numbers as the first time (the data plan, the dropout seeds and the
optimizer state are all restored)."""

import os
import signal
import threading
import time

import psutil
import pytest
from mlflow import MlflowClient

from pipelines.train.config import TrainConfig
from pipelines.train.job import run_stage

pytestmark = pytest.mark.integration


def _train_worker_pids() -> list[int]:
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in process.info["cmdline"] or []):
            pids.append(process.pid)
    return pids


def _loss_history(client: MlflowClient, run_name: str) -> list:
    experiment = client.get_experiment_by_name("llava-sp")
    if experiment is None:  # not created yet: the run is still preparing its data
        return []
    runs = client.search_runs(experiment.experiment_id, filter_string=f"attributes.run_name = '{run_name}'",
                              order_by=["attributes.start_time DESC"])
    return client.get_metric_history(runs[0].info.run_id, "loss") if runs else []


def _values_by_step(history: list) -> dict[int, list[float]]:
    """Every logged value of each step, in logging order (a step run again after a restart has two)."""
    values: dict[int, list[float]] = {}
    for metric in sorted(history, key=lambda metric: metric.timestamp):
        values.setdefault(metric.step, []).append(metric.value)
    return values


def test_a_killed_worker_is_replaced_and_the_replayed_steps_compute_the_same_numbers(ray_session, environment):
    """The kill lands between checkpoints (the latest logged step is 1 or 2 past a multiple of checkpoint_every, and a
    step takes far longer than the kill), so the restart resumes before that step and runs it a second time: both
    attempts at every replayed step must log the same loss and grad norm."""
    config = TrainConfig(stage="finetune", num_workers=2, micro_batch_size=8, max_steps=24, checkpoint_every=4,
                         lr=2e-3, lora_r=8, lora_alpha=16, max_failures=2, storage_path=str(environment / "runs"),
                         run_name="killed")
    outcome: dict = {}
    earlier_workers = set(_train_worker_pids())  # workers of runs that finished before may linger a moment
    thread = threading.Thread(target=lambda: outcome.update(result=run_stage(config)))
    thread.start()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    victim, killed_after = None, 0
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        history = _loss_history(client, "killed")
        first_checkpoint = [m.timestamp for m in history if m.step == 4]
        latest = max((m.step for m in history), default=0)
        assert latest <= config.max_steps - 6, "the run got too far before the kill"
        # Ray registers a reported checkpoint on its next poll of the workers: kill well after the first one.
        if first_checkpoint and time.time() * 1000 - first_checkpoint[0] > 4000 and latest % 4 in (1, 2):
            workers = [pid for pid in _train_worker_pids() if pid not in earlier_workers]
            if workers:
                victim, killed_after = workers[-1], latest
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.05)
    thread.join(timeout=600)
    assert victim is not None, "the run ended before a worker could be killed"
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    result = outcome["result"]
    assert result.metrics["step"] == 24

    losses = _values_by_step(_loss_history(client, "killed"))
    assert sorted(losses) == list(range(1, 25)) and len(losses[1]) == 1, losses  # resumed, not restarted
    replayed = sorted(step for step, values in losses.items() if len(values) > 1)
    assert killed_after in replayed and all(step > 4 for step in replayed), (killed_after, replayed)
    run_id = client.search_runs(client.get_experiment_by_name("llava-sp").experiment_id,
                                filter_string="attributes.run_name = 'killed'")[0].info.run_id
    grad_norms = _values_by_step(client.get_metric_history(run_id, "grad_norm"))
    for step in replayed:
        for values in (losses[step], grad_norms[step]):
            assert max(values) - min(values) <= 1e-6 * max(1.0, abs(values[0])), (step, values)


def test_a_stopped_run_resumes_when_started_again(ray_session, environment):
    """max_failures=0: the kill stops the run; the same command again continues it from its last checkpoint."""
    config = TrainConfig(stage="pretrain", num_workers=2, micro_batch_size=8, max_steps=24, checkpoint_every=4,
                         lr=2e-3, max_failures=0, storage_path=str(environment / "runs"), run_name="stopped")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    outcome: dict = {}
    earlier_workers = set(_train_worker_pids())

    def first_attempt() -> None:
        try:
            outcome["result"] = run_stage(config)
        except Exception as error:  # the run is expected to fail
            outcome["error"] = error

    thread = threading.Thread(target=first_attempt)
    thread.start()
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        first_checkpoint = [m.timestamp for m in _loss_history(client, "stopped") if m.step == 4]
        workers = [pid for pid in _train_worker_pids() if pid not in earlier_workers]
        if first_checkpoint and time.time() * 1000 - first_checkpoint[0] > 4000 and workers:
            os.kill(workers[-1], signal.SIGKILL)
            break
        time.sleep(0.1)
    thread.join(timeout=600)
    assert "error" in outcome, "the first attempt should have failed"
    stopped_run = client.search_runs(client.get_experiment_by_name("llava-sp").experiment_id,
                                     filter_string="attributes.run_name = 'stopped'")[0]
    assert stopped_run.info.status == "FAILED"
    stopped_at = max(m.step for m in client.get_metric_history(stopped_run.info.run_id, "loss"))

    resumed = run_stage(config)
    assert resumed.metrics["step"] == 24
    # One training run is one MLflow run: the resumed attempt goes on in the stopped one, and its loss curve covers
    # every step; the steps up to the first checkpoint were not trained (or logged) again.
    assert resumed.run_id == stopped_run.info.run_id
    assert client.get_run(resumed.run_id).info.status == "FINISHED"
    logged = _values_by_step(client.get_metric_history(resumed.run_id, "loss"))
    assert sorted(logged) == list(range(min(logged), 25)) and min(logged) <= 1 and stopped_at < 24
    assert all(len(logged[step]) == 1 for step in logged if step <= 4), logged

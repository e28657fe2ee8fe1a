"""A training worker killed mid-run (SIGKILL by pid): Ray replaces it, training resumes from the last checkpoint,
and the final loss equals an uninterrupted run's (the data plan, the dropout seeds and the optimizer state are all
restored, so the resumed steps compute the same numbers)."""

import os
import signal
import threading
import time
from dataclasses import replace

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


def test_a_killed_worker_is_replaced_and_the_run_ends_with_the_uninterrupted_loss(ray_session, environment):
    config = TrainConfig(stage="finetune", num_workers=2, micro_batch_size=8, max_steps=24, checkpoint_every=4,
                         lr=2e-3, lora_r=8, lora_alpha=16, max_failures=2, storage_path=str(environment / "runs"),
                         run_name="reference")
    reference = run_stage(config)

    outcome: dict = {}
    earlier_workers = set(_train_worker_pids())  # workers of the finished run may linger a moment
    killed = replace(config, run_name="killed")
    thread = threading.Thread(target=lambda: outcome.update(result=run_stage(killed)))
    thread.start()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    victim = None
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        history = _loss_history(client, "killed")
        first_checkpoint = [m.timestamp for m in history if m.step == 4]
        latest = max((m.step for m in history), default=0)
        assert latest <= config.max_steps - 6 or victim is not None, "the run got too far before the kill"
        # Ray registers a reported checkpoint on its next poll of the workers: kill well after the first one,
        # with steps still to run.
        if first_checkpoint and time.time() * 1000 - first_checkpoint[0] > 4000:
            workers = [pid for pid in _train_worker_pids() if pid not in earlier_workers]
            if workers:
                victim = workers[-1]
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.1)
    thread.join(timeout=600)
    assert victim is not None, "the run ended before a worker could be killed"
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    result = outcome["result"]

    history = sorted(_loss_history(client, "killed"), key=lambda metric: metric.timestamp)
    steps = [metric.step for metric in history]
    assert result.metrics["step"] == 24
    assert steps.count(1) == 1, steps  # resumed from a checkpoint, not from scratch
    # Restarted: steps after the checkpoint were run again, or (killed right at a checkpoint) a restart-sized gap.
    gaps = [later.timestamp - earlier.timestamp for earlier, later in zip(history, history[1:])]
    assert any(steps.count(step) > 1 for step in range(5, 25)) or max(gaps) > 5000, (steps, gaps)
    assert abs(result.metrics["loss"] - reference.metrics["loss"]) <= 1e-4, (result.metrics, reference.metrics)


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
    resumed_steps = [m.step for m in client.get_metric_history(resumed.run_id, "loss")]
    assert resumed.metrics["step"] == 24
    assert 4 < min(resumed_steps) <= stopped_at + 1, (min(resumed_steps), stopped_at)  # continued, not restarted

"""What jobs print by default: Ray Data's console quiet while its log file keeps everything, and a training run's
progress read from its MLflow metrics."""

from __future__ import annotations

import json
import subprocess
import sys

from mlflow import MlflowClient

from pipelines.output import RAY_DATA_QUIET_CONFIG
from pipelines.train.progress import TrainingProgress


def test_ray_data_loads_the_quiet_config_a_file_log_and_a_console_for_warnings():
    code = ("import json, logging, ray.data; "
            "print(json.dumps([[type(h).__name__, h.level] for h in logging.getLogger('ray.data').handlers]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                          env={"RAY_DATA_LOGGING_CONFIG": str(RAY_DATA_QUIET_CONFIG), "PATH": "/usr/bin:/bin"})
    handlers = json.loads(done.stdout.strip().splitlines()[-1])
    assert handlers == [["SessionFileHandler", 0], ["StreamHandler", 30]]  # Ray Data's file handler, our console


def test_the_progress_bar_follows_the_steps_and_loss_rank_0_logs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("progress")).info.run_id
    progress = TrainingProgress(uri, run_id, "pretrain-x", total_steps=10, poll_s=60)
    progress.update()
    assert progress.bar.n == 0  # nothing logged yet
    for step, loss in enumerate([2.0, 1.5, 1.25]):
        client.log_metric(run_id, "loss", loss, step=step)
    progress.update()
    assert progress.bar.n == 3 and progress.bar.postfix == "loss=1.2500"
    progress.bar.close()

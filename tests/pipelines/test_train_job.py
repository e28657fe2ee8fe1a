"""jobs/pretrain.py submitted with `ray job submit` to a local head node runs to SUCCEEDED."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.ray_head import ray_head, submit_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_pretrain_job_via_ray_job_submit(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"LLAVA_SP_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking, "HF_HUB_OFFLINE": "1"}
    # 2 training workers hold 2 CPUs; the extra logical CPUs let Ray Data read shards beside them.
    with ray_head(num_cpus=4) as address:
        done = submit_job(address, ["python", "jobs/pretrain.py", "max_steps=4", "checkpoint_every=2",
                                    f"storage_path={tmp_path / 'runs'}"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()
    assert "pretrain: final loss" in output and "after 4 steps" in output
    runs = MlflowClient(tracking).search_runs(MlflowClient(tracking).get_experiment_by_name("llava-sp").experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (tmp_path / "runs" / "pretrain-cropping").is_dir()

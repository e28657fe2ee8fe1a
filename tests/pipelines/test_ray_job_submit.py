"""Jobs submitted with `ray job submit` to one local head node run to SUCCEEDED: preprocess, then pretrain.

One head for both (starting one costs ~30 s on 2 cores); the pretrain job finds the shards the preprocess job wrote,
because the embedded default's preprocessing is content-addressed.
"""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.ray_head import ray_head, submit_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    env = {"LLAVA_SP_HOME": str(root / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "HF_HUB_OFFLINE": "1"}
    # 2 training workers hold 2 CPUs; the extra logical CPUs let Ray Data read shards beside them.
    with ray_head(num_cpus=4) as address:
        yield address, env, root


def test_preprocess_job_via_ray_job_submit_succeeds_on_the_embedded_default(head):
    address, env, root = head
    done = submit_job(address, ["python", "jobs/preprocess.py", "template=plain",
                                f"output_dir={root / 'home' / 'data'}"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "succeeded" in output.lower()
    assert "preprocess: read 400 = written 400 + quarantined 0" in output
    assert len(list((root / "home" / "data").glob("*/manifest.json"))) == 1


def test_pretrain_job_via_ray_job_submit(head):
    address, env, root = head
    done = submit_job(address, ["python", "jobs/pretrain.py", "max_steps=4", "checkpoint_every=2",
                                f"storage_path={root / 'runs'}"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()
    assert "pretrain: final loss" in output and "after 4 steps" in output
    tracking = env["MLFLOW_TRACKING_URI"]
    runs = MlflowClient(tracking).search_runs(MlflowClient(tracking).get_experiment_by_name("llava-sp").experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (root / "runs" / "pretrain-cropping").is_dir()
    # The job reused the preprocess job's shards rather than writing a second dataset.
    assert len(list((root / "home" / "data").glob("*/manifest.json"))) == 1

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
    with ray_head(num_cpus=4) as (address, temp_dir):
        yield address, env, root, temp_dir


def test_preprocess_job_via_ray_job_submit_succeeds_on_the_embedded_default(head):
    address, env, root, temp_dir = head
    done = submit_job(address, ["python", "jobs/preprocess.py", "template=plain", "name=captions"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "succeeded" in output.lower()
    assert "preprocess: read 400 = written 400 + quarantined 0" in output
    # Quiet by default: Ray Data's INFO lines are in Ray's log file, not in the job's output.
    assert "Execution plan" not in output and "streaming_executor" not in output
    ray_data_log = "".join(path.read_text() for path in temp_dir.glob("session_*/logs/ray-data/ray-data*.log"))
    assert "Execution plan" in ray_data_log
    assert len(list((root / "home" / "data").glob("*/manifest.json"))) == 1
    assert "data set captions = " in output and "train with data=captions" in output


def test_pretrain_job_via_ray_job_submit(head):
    address, env, root, _ = head
    done = submit_job(address, ["python", "jobs/pretrain.py", "max_steps=4", "checkpoint_every=2", "data=captions",
                                f"storage_path={root / 'runs'}"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()
    assert "pretrain: final loss" in output and "after 4 steps" in output
    tracking = env["MLFLOW_TRACKING_URI"]
    runs = MlflowClient(tracking).search_runs(MlflowClient(tracking).get_experiment_by_name("llava-sp").experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # Everything it wrote is where it was told, outside Ray's temporary copy of the working directory.
    assert runs[0].info.artifact_uri.startswith((root / "mlruns").as_uri())
    assert runs[0].data.tags["mlflow.source.name"] == "pretrain.py" and runs[0].data.tags["ray.job_id"]
    assert runs[0].data.tags["ray.working_dir"].startswith("gcs://")
    assert [path.name.startswith("pretrain-cropping-") for path in (root / "runs").iterdir()] == [True]
    # The job read the data set by the name the preprocess job gave it, rather than writing a second one.
    assert len(list((root / "home" / "data").glob("*/manifest.json"))) == 1
    assert runs[0].data.params["data_dir"] == str(next((root / "home" / "data").glob("*/manifest.json")).parent)


def test_a_changed_setting_is_a_new_run_and_an_unchanged_one_is_reused(head):
    address, env, root, _ = head
    storage = root / "identity"
    common = ["python", "jobs/pretrain.py", "max_steps=2", "checkpoint_every=2", f"storage_path={storage}"]
    first = submit_job(address, [*common, "lr=1e-3", "run_name=mine"], env, cwd=ROOT)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    changed = submit_job(address, [*common, "lr=3e-4", "run_name=mine"], env, cwd=ROOT)
    output = changed.stdout + changed.stderr
    assert changed.returncode != 0 and "lr: 0.001 -> 0.0003" in output and "resume=force" in output
    again = submit_job(address, [*common, "lr=1e-3", "run_name=mine", "checkpoint_every=1"], env, cwd=ROOT)
    output = again.stdout + again.stderr
    assert again.returncode == 0 and "already finished with these settings" in output, output[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    mine = client.search_runs(client.get_experiment_by_name("llava-sp").experiment_id, "attributes.run_name = 'mine'")
    assert len(mine) == 1  # one training run, one MLflow run


def test_a_submitted_job_told_nowhere_to_write_fails_at_once_saying_what_to_set(head):
    address, env, _, _ = head
    unset = {name: value for name, value in env.items() if name != "LLAVA_SP_HOME"}
    done = submit_job(address, ["python", "jobs/pretrain.py", "max_steps=1", "storage_path=runs/train"], unset,
                      cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Ray's temporary copy of its working directory" in output
    assert "LLAVA_SP_HOME is not set" in output and "storage_path=runs/train is a relative path" in output
    assert "pretrain: final loss" not in output

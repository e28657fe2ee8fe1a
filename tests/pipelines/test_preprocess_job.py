"""jobs/preprocess.py through `ray job submit` to a local head node, and as a plain script."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_head import ray_head, submit_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_preprocess_job_via_ray_job_submit_succeeds_on_the_embedded_default(tmp_path):
    env = {"LLAVA_SP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    with ray_head() as address:
        done = submit_job(address, ["python", "jobs/preprocess.py", f"output_dir={tmp_path / 'data'}"], env, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "succeeded" in output.lower()
    assert "preprocess: read 444 = written 444 + quarantined 0" in output
    assert list((tmp_path / "data").glob("*/manifest.json"))


def test_preprocess_job_reports_a_bad_option_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "jobs/preprocess.py", "template=llava_v0", "bogus=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("preprocess: error:") and "unknown option 'bogus'" in last and "template='llava_v0'" in last

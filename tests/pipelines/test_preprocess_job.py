"""jobs/preprocess.py as a plain script (its `ray job submit` run is in test_ray_job_submit.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_preprocess_job_reports_a_bad_option_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "jobs/preprocess.py", "template=llava_v0", "bogus=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("preprocess: error:") and "unknown option 'bogus'" in last and \
        "option 'template' = 'llava_v0': Input should be 'plain' or 'vicuna_v1'" in last

"""Training on a local multi-node Ray cluster (tests/pipelines/multinode_run.py, in its own process): the two workers
run on different nodes, one of those nodes is removed mid-run, and the run finishes from its last checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outcome(ray_session, environment) -> dict:
    from pipelines.defaults import embedded_model_dir
    from pipelines.train.job import embedded_data_dir

    out = environment / "multinode"
    out.mkdir()
    # The embedded caption shards (the session's other training tests already made them), prepared on the session's
    # warm Ray: the cluster's fresh workers would be slower.
    data_dir = embedded_data_dir("pretrain", str(embedded_model_dir("cropping")))
    completed = subprocess.run([sys.executable, "-m", "tests.pipelines.multinode_run", str(out), data_dir], cwd=REPO,
                               check=False, env={**os.environ, "RAY_ADDRESS": ""}, capture_output=True, text=True,
                               timeout=540)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((out / "outcome.json").read_text())


def test_the_workers_ran_on_different_nodes_and_one_of_those_nodes_was_removed(outcome):
    from tests.pipelines.multinode_run import REMOVE_AFTER

    assert "removed" in outcome, f"the run ended before a node could be removed: {outcome}"
    assert outcome["removed"] in outcome["worker_nodes"]
    assert max(outcome["steps_before_removal"]) >= REMOVE_AFTER
    nodes_used = set(outcome["workers_seen"].values())
    assert outcome["removed"] in nodes_used and len(nodes_used) == 3, outcome  # 2 nodes, then the replacement's
    assert outcome["one_machine"] is False  # so the single-machine workaround (idle_pause) stays off here


def test_the_run_resumed_from_a_checkpoint_and_finished(outcome):
    from tests.pipelines.multinode_run import CHECKPOINT_EVERY, MAX_STEPS

    steps = outcome["steps"]
    assert outcome.get("final") == MAX_STEPS, outcome
    assert sorted(set(steps)) == list(range(1, MAX_STEPS + 1))
    assert len(outcome["workers_seen"]) == 4  # the first two workers, then a new group of two
    replayed = sorted(step for step in set(steps) if steps.count(step) > 1)
    # Resumed from the last checkpoint before the removal, not from the start: only the steps after it ran twice.
    assert steps.count(1) == 1 and all(step > CHECKPOINT_EVERY for step in replayed), steps

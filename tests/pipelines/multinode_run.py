"""One training stage on a local 3-node Ray cluster, losing a node that runs a training worker mid-run.

    python -m tests.pipelines.multinode_run OUT_DIR DATA_DIR     # DATA_DIR: preprocessed stage-1 (caption) shards

Run in its own process by test_train_multinode.py: a Ray driver can join only one cluster, and the test session
already has its own. The head has 2 CPUs, each of the two worker nodes 1; the run asks for one worker per node
(STRICT_SPREAD), so one worker lands on a worker node. Once step 5 is logged (after the step-4 checkpoint) that
node is removed (its raylet and every process on it killed): Ray Train replaces the lost worker on the nodes that
remain and the run resumes from the checkpoint. Writes OUT_DIR/outcome.json: which node ran which worker, the
removed node, the logged steps.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import ray
from mlflow import MlflowClient
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

RUN_NAME = "multinode"
MAX_STEPS, CHECKPOINT_EVERY, REMOVE_AFTER = 12, 2, 5
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}  # a lost node is noticed in ~2 s


def _logged_steps(client: MlflowClient) -> list[int]:
    experiment = client.get_experiment_by_name("llava-sp")
    if experiment is None:
        return []
    runs = client.search_runs(experiment.experiment_id, filter_string=f"attributes.run_name = '{RUN_NAME}'")
    return sorted(metric.step for metric in client.get_metric_history(runs[0].info.run_id, "loss")) if runs else []


def _train_workers() -> dict[str, str]:
    """Alive training workers: actor id -> node id."""
    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return {actor.actor_id: actor.node_id for actor in actors}


def main(out: Path, data_dir: str) -> None:
    from pipelines.train.config import TrainConfig
    from pipelines.train.job import run_stage

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "_system_config": HEALTH_CHECKS})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    head = ray.get_runtime_context().get_node_id()
    config = TrainConfig(stage="pretrain", data=data_dir, num_workers=2, micro_batch_size=2,
                         max_steps=MAX_STEPS, checkpoint_every=CHECKPOINT_EVERY, max_failures=2,
                         placement_strategy="STRICT_SPREAD", storage_path=str(out / "runs"), run_name=RUN_NAME)
    from pipelines.runtime import on_one_machine

    outcome: dict = {"head": head, "worker_nodes": [node.node_id for node in workers], "workers_seen": {},
                     "one_machine": on_one_machine()}
    thread = threading.Thread(target=lambda: outcome.update(final=run_stage(config).metrics["step"]))
    thread.start()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 400
    while thread.is_alive() and time.monotonic() < deadline:
        alive = _train_workers()
        outcome["workers_seen"].update(alive)
        if "removed" not in outcome and REMOVE_AFTER in _logged_steps(client):
            victim = next((node for node in workers if node.node_id in alive.values()), None)
            if victim is not None:
                outcome["removed"] = victim.node_id
                outcome["steps_before_removal"] = _logged_steps(client)
                cluster.remove_node(victim)
        time.sleep(0.3)
    thread.join(timeout=5)
    outcome["steps"] = _logged_steps(client)
    (out / "outcome.json").write_text(json.dumps(outcome, indent=2))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])

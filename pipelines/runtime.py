"""Ray start-up shared by the jobs: join the cluster a job was submitted to, or start a local one."""

from __future__ import annotations

import logging
import os

import ray

from pipelines.data.idle_pause import pause_when_idle_by_default
from pipelines.locations import check_job_locations
from pipelines.output import is_verbose, quiet_library_loggers

logger = logging.getLogger(__name__)
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# What a local Ray's training runs are set to, unless the environment says otherwise.
LOCAL_TRAIN_SETTINGS = {
    # Ray Train's controller takes one report from each worker per poll, and a worker's next ray.train.report() waits
    # until it has (a queue of one). At the default 2 s poll, a run whose steps take well under a second and that
    # checkpoints every few of them (the demo, the tests) spends much of its time waiting on the poll.
    TRAIN_POLL_ENV: "0.5",
    # Each run starts an actor that watches for the cloud draining a node (spot preemption). One machine is never
    # drained, and that actor process costs every run a process start.
    PREEMPTION_WATCHER_ENV: "0",
}


def use_local_train_settings() -> None:
    """LOCAL_TRAIN_SETTINGS in the local Ray about to start, where the environment does not set them. Ray's
    processes inherit the driver's environment, so this must run before ray.init()."""
    for name, value in LOCAL_TRAIN_SETTINGS.items():
        os.environ.setdefault(name, value)


def init_ray(num_cpus: int | None = None, writes: dict[str, str] | None = None, tracks: bool = True) -> None:
    """Under `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start a local Ray on this machine.

    address="local" on purpose: a bare ray.init() would join whatever cluster /tmp/ray/ray_current_cluster names,
    even a dead one left by an earlier `ray start`. The dashboard runs on 127.0.0.1: it is where a person watches the
    jobs, and Ray Train's placement-group cleaner asks its state API whether a trainer is still alive. A cluster
    keeps its own Ray Train settings; a local Ray polls its workers more often and starts no preemption watcher
    (use_local_train_settings). On one machine, datasets created here pause their executors when idle
    (pipelines.data.idle_pause).

    writes / tracks: where the job writes and whether it logs to MLflow; a job submitted with a working_dir that
    would write into Ray's copy of it fails here, before any work (pipelines.locations)."""
    if ray.is_initialized():
        check_job_locations(writes or {}, tracks)
        return
    # Workers' output (Ray Train, Serve replicas, Ray Data tasks) stays in Ray's log files unless --verbose, and
    # ray.init sets Ray's own logger to logging_level.
    output = {"log_to_driver": is_verbose(), "logging_level": logging.INFO if is_verbose() else logging.WARNING}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **output)
    else:
        use_local_train_settings()
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                           **output)
        logger.info("ray dashboard: http://%s", context.dashboard_url)
    quiet_library_loggers()
    check_job_locations(writes or {}, tracks)
    if on_one_machine():
        pause_when_idle_by_default()
    logger.debug("ray: %s", ray.cluster_resources())


def on_one_machine() -> bool:
    """Whether the Ray this process is connected to runs on a single node (a workstation, a test machine): where
    idle Ray Data executors take cores that training needs (pipelines.data.idle_pause)."""
    return sum(1 for node in ray.nodes() if node.get("Alive")) == 1

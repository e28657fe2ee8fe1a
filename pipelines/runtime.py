"""Ray start-up shared by the jobs: join the cluster a job was submitted to, or start a local one."""

from __future__ import annotations

import logging
import os

import ray

from pipelines.data.idle_pause import pause_when_idle_by_default

logger = logging.getLogger(__name__)
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train's controller takes one report from each worker per poll, and a worker's next ray.train.report() waits
# until it has (a queue of one). At the default 2 s poll, a run whose steps take well under a second and that
# checkpoints every few of them (the demo, the tests) spends much of its time waiting on the poll.
LOCAL_TRAIN_POLL_S = "0.5"


def use_local_train_poll() -> None:
    """Poll training workers every LOCAL_TRAIN_POLL_S in the local Ray about to start, unless the environment says
    otherwise. Ray's processes inherit the driver's environment, so this must run before ray.init()."""
    os.environ.setdefault(TRAIN_POLL_ENV, LOCAL_TRAIN_POLL_S)


def init_ray(num_cpus: int | None = None) -> None:
    """Under `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start a local Ray on this machine.

    address="local" on purpose: a bare ray.init() would join whatever cluster /tmp/ray/ray_current_cluster names,
    even a dead one left by an earlier `ray start`. The dashboard runs on 127.0.0.1: it is where a person watches the
    jobs, and Ray Train's placement-group cleaner asks its state API whether a trainer is still alive. A cluster
    keeps its own Ray Train poll interval; a local Ray polls more often (use_local_train_poll). Datasets created here
    pause their executors when idle (pipelines.data.idle_pause)."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        use_local_train_poll()
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                           log_to_driver=True)
        logger.info("ray dashboard: http://%s", context.dashboard_url)
    pause_when_idle_by_default()
    logger.info("ray: %s", ray.cluster_resources())

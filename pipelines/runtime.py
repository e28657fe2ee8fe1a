"""Ray start-up shared by the jobs: join the cluster a job was submitted to, or start a local one."""

from __future__ import annotations

import logging
import os

import ray

logger = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None) -> None:
    """Under `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start a local Ray on this machine.

    address="local" on purpose: a bare ray.init() would join whatever cluster /tmp/ray/ray_current_cluster names,
    even a dead one left by an earlier `ray start`. The dashboard runs on 127.0.0.1: it is where a person watches the
    jobs, and Ray Train's placement-group cleaner asks its state API whether a trainer is still alive."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                           log_to_driver=True)
        logger.info("ray dashboard: http://%s", context.dashboard_url)
    logger.info("ray: %s", ray.cluster_resources())

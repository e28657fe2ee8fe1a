"""Where a job writes, settled on the driver before any work: never inside Ray's copy of a working directory.

`ray job submit --working-dir .` runs a job in a copy of that directory which Ray unpacks into its session's
temporary directory, under a name made of the content's hash. What the job writes there under a relative path goes
when the session goes, and the next submission (after any edit) runs in another copy, so it cannot resume or find
what the last one wrote. A submitted job is therefore told where to write, somewhere every node of the cluster
sees: LLAVA_SP_HOME (runs, checkpoints, data sets, answers, caches) and MLFLOW_TRACKING_URI (the tracking store);
an option that names a relative path to write to is refused for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LLAVA_SP_HOME"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


class LocationError(ValueError):
    """A submitted job would write into Ray's temporary copy of its working directory."""


def runs_in_ray_working_dir() -> bool:
    """Whether this driver runs in Ray's copy of a job's working directory (its runtime env has a working_dir)."""
    import ray

    return ray.is_initialized() and bool(ray.get_runtime_context().runtime_env.get("working_dir"))


def location_problems(written: dict[str, str], tracks: bool, environment: dict[str, str]) -> list[str]:
    """What would be written into the working directory's copy: unset or relative locations."""
    problems = []
    home = environment.get(HOME_ENV, "")
    if not home:
        problems.append(f"{HOME_ENV} is not set")
    elif not Path(home).is_absolute():
        problems.append(f"{HOME_ENV}={home} is a relative path")
    if tracks and not environment.get(TRACKING_ENV):
        problems.append(f"{TRACKING_ENV} is not set")
    problems += [f"{name}={value} is a relative path" for name, value in written.items()
                 if value and not Path(value).is_absolute() and "://" not in value]
    return problems


def check_job_locations(written: dict[str, str], tracks: bool = True) -> None:
    """Refuse at once a submitted job that would write into Ray's copy of its working directory.

    written: the job's options that name where it writes (name -> value; "" = the default under LLAVA_SP_HOME);
    tracks: whether the job logs to MLflow. Outside a submitted job (python jobs/...), nothing is checked: relative
    paths are then relative to the directory the command runs in."""
    if not runs_in_ray_working_dir():
        return
    problems = location_problems(written, tracks, dict(os.environ))
    if problems:
        raise LocationError(
            "this job runs in Ray's temporary copy of its working directory (" + os.getcwd() + "), where what it "
            "writes is lost with the Ray session: " + "; ".join(problems) + ". Give absolute locations every node "
            f"sees, e.g. ray job submit --runtime-env-json '{{\"env_vars\": {{\"{HOME_ENV}\": \"/shared/llava-sp\", "
            f"\"{TRACKING_ENV}\": \"http://mlflow:5000\"}}}}' --working-dir . -- python jobs/...")

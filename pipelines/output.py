"""What a job prints. By default: its own progress bars (preprocessing chunks, training steps, answered questions)
and a line per result; Ray's, MLflow's and the model libraries' INFO logs stay in their log files (Ray's session
log directory, /tmp/ray/session_latest/logs) and workers' output is not streamed to the job. --verbose prints
everything, as Ray does by itself."""

from __future__ import annotations

import logging
import os
from pathlib import Path

VERBOSE_ENV = "LLAVA_SP_VERBOSE"
# Ray Data's console, warnings only; its file log unchanged (Ray Data reads this before its first use).
RAY_DATA_QUIET_CONFIG = Path(__file__).resolve().parents[1] / "infra" / "logging" / "ray-data-quiet.yaml"
QUIET_LOGGERS = ("ray", "ray.serve", "ray.train", "ray.tune", "mlflow", "alembic", "transformers", "deepspeed",
                 "DeepSpeed", "httpx", "urllib3", "filelock")
QUIET_ENVIRONMENT = {
    "RAY_DATA_LOGGING_CONFIG": str(RAY_DATA_QUIET_CONFIG),
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars too
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}


def configure_output(verbose: bool) -> None:
    """Before the job imports Ray or the model libraries: they read these settings when they load."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    # basicConfig leaves a logging set up already (an embedding program's, pytest's) as it is.
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    quiet_library_loggers()


def quiet_library_loggers() -> None:
    """Warnings and errors only from the libraries' loggers. Again after `import ray`, which sets its logger to
    INFO when it loads."""
    if is_verbose():
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) != "0"  # a library caller that configured nothing sees everything

"""MLflow: where runs go, and the plots a person looks at.

Default store: the embedded MLflow, sqlite:///<abs cwd>/mlflow.db with artifacts in mlruns/ beside it (made
absolute so that Ray workers, whose cwd differs, write to the same place); MLFLOW_TRACKING_URI overrides (a
submitted job must set it: pipelines/locations.py). The store is created in the driver, before any worker, because
two workers creating the same fresh sqlite file at once crash.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient


def tracking_uri() -> str:
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{Path('mlflow.db').absolute()}"


def start_run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> tuple[str, str]:
    """(tracking uri, run id) of a new run in `experiment` (created if missing)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.create_run(_experiment_id(client, experiment), run_name=run_name, tags=tags or {})
    return uri, run.info.run_id


def source_tags() -> dict[str, str]:
    """MLflow's own source tags and the Ray job's: which code made a run, and which job ran it."""
    tags = {"mlflow.source.name": Path(sys.argv[0]).name or "python", "mlflow.source.type": "JOB"}
    tags.update(_git_tags(Path(__file__).resolve().parents[1]))
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        tags["ray.job_id"] = context.get_job_id()
        # A submitted job runs a copy of its working directory, uploaded under a name made of its content's hash
        # (and without .git): that name identifies the code when no commit can be read.
        working_dir = context.runtime_env.get("working_dir")
        if working_dir:
            tags["ray.working_dir"] = str(working_dir)
    return tags


def _git_tags(root: Path) -> dict[str, str]:
    """The commit of a git checkout, and whether files differ from it; {} outside one."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.uncommitted_changes": str(bool(changed)).lower()}


def prepare_experiment(experiment: str) -> str:
    """The experiment's id in the configured store, creating the store and the experiment where missing. A new sqlite
    store runs MLflow's schema migrations first (seconds of CPU): a job can do that while other work waits anyway."""
    return _experiment_id(MlflowClient(tracking_uri()), experiment)


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    """The experiment's id, creating it if missing. Runs started side by side (the demo's variants) may race to create
    it: the loser finds the winner's."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=_artifact_root(client.tracking_uri))
    except MlflowException:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go to mlruns/ beside its database file, an absolute location (MLflow's
    own default, ./mlruns, is relative to whichever directory a job happens to run in); a tracking server keeps
    its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").absolute().as_uri()
    return None


def log_params(uri: str, run_id: str, params: dict) -> None:
    """Log params; in a run that already has some (a resumed run), only the new ones: MLflow keeps a param's first
    value, so one that changed (resume=force) is recorded as a tag `param_changed.<key>` instead."""
    from mlflow.entities import Param

    client = MlflowClient(uri)
    logged = client.get_run(run_id).data.params
    values = {key: str(value)[:6000] for key, value in sorted(params.items())}
    items = [Param(key, value) for key, value in values.items() if key not in logged]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])
    for key, value in values.items():
        if key in logged and logged[key] != value:
            client.set_tag(run_id, f"param_changed.{key}", value)


def log_metric_curves(uri: str, run_id: str,
                      keys: tuple[str, ...] = ("loss", "val_loss", "lr", "grad_norm")) -> None:
    """A PNG of each logged per-step metric, as artifacts under plots/."""
    # Figure, not pyplot: pyplot's global state is not safe from the threads that train the demo's variants.
    from matplotlib.figure import Figure

    client = MlflowClient(uri)
    for key in keys:
        history = sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)
        if not history:
            continue
        figure = Figure(figsize=(6, 3.5))
        axis = figure.subplots()
        axis.plot([m.step for m in history], [m.value for m in history], linewidth=1.2)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(key)
        axis.set_title(f"{key} ({client.get_run(run_id).info.run_name})")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        client.log_image(run_id, _png_to_image(buffer), artifact_file=f"plots/{key}.png")


def _png_to_image(buffer: io.BytesIO):
    from PIL import Image

    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def run_artifact_dir(uri: str, run_id: str, artifact_path: str) -> Path:
    """A local copy of a run's artifact directory, from the artifact cache (downloaded there on first use)."""
    from pipelines.artifact_cache import cached_artifacts

    return cached_artifacts(uri, f"runs:/{run_id}/{artifact_path}")

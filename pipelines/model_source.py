"""Where a model to serve or evaluate comes from: a model directory, an MLflow run or model URI, or the embedded
default. One resolver, so `source=` means the same in jobs/serve.py and jobs/evaluate.py."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Training runs log their final model (safetensors, tokenizer, processor) under this artifact path.
RUN_MODEL_ARTIFACT = "checkpoint/model"


def resolve_model_dir(source: str, variant: str = "cropping", label: str = "model",
                      trained_in: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """A local directory with config.json for `source`; MLflow artifacts are downloaded first.

    source "": the embedded default: the newest finetune-<variant> model under `trained_in` (a TrainConfig
    storage_path) when there is one, else the untrained tiny model of `variant`.
    """
    if not source:
        return _embedded(variant, label, trained_in)
    if source.startswith(("mlflow:", "runs:/", "models:/")):
        directory = _download(source, tracking_uri)
    else:
        directory = Path(source)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{label}: {source} is not a model directory (no config.json in {directory}); give a "
                                "saved model dir, mlflow:<run_id> of a training run, or an MLflow model URI")
    return directory


def latest_trained_model(storage_path: str | Path, variant: str) -> Path | None:
    """The exported model of the most recently finished finetune run of this variant, if any."""
    from pipelines.train.run_identity import latest_finished_run

    record = latest_finished_run(Path(storage_path), "finetune", variant)
    return Path(record.checkpoint) / "model" if record else None


def _embedded(variant: str, label: str, trained_in: str | Path | None) -> Path:
    if trained_in is not None:
        trained = latest_trained_model(trained_in, variant)
        if trained is not None:
            logger.info("%s: the newest finetune-%s model, %s", label, variant, trained)
            return trained
    from pipelines.defaults import embedded_model_dir

    directory = embedded_model_dir(variant)
    if trained_in is not None:
        logger.warning("%s: no finetune-%s model under %s; using the untrained tiny model %s", label, variant,
                       trained_in, directory)
    return directory


def _download(source: str, tracking_uri: str | None) -> Path:
    """The local copy of an MLflow source, from the artifact cache (downloaded there on first use)."""
    from pipelines import tracking
    from pipelines.artifact_cache import cached_artifacts

    uri = tracking_uri or tracking.tracking_uri()
    if source.startswith("mlflow:"):
        return cached_artifacts(uri, f"runs:/{source.split(':', 1)[1]}/{RUN_MODEL_ARTIFACT}")
    return cached_artifacts(uri, source)

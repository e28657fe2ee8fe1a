"""Where a served model comes from: a model directory, an MLflow run or model URI, or the embedded tiny model."""

from __future__ import annotations

from pathlib import Path

from pipelines.serve.config import ModelSpec

# Training runs log their final model (safetensors, tokenizer, processor) under this artifact path.
RUN_MODEL_ARTIFACT = "checkpoint/model"


def resolve_model_dir(spec: ModelSpec, tracking_uri: str | None = None) -> Path:
    """A local directory with config.json for `spec.source`; MLflow artifacts are downloaded first."""
    source = spec.source
    if not source:
        from pipelines.defaults import embedded_model_dir

        return embedded_model_dir(spec.variant)
    if source.startswith(("mlflow:", "runs:/", "models:/")):
        import mlflow

        from pipelines import tracking

        uri = tracking_uri or tracking.tracking_uri()
        if source.startswith("mlflow:"):
            local = mlflow.artifacts.download_artifacts(run_id=source.split(":", 1)[1],
                                                        artifact_path=RUN_MODEL_ARTIFACT, tracking_uri=uri)
        else:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri)
        directory = Path(local)
    else:
        directory = Path(source)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"model {spec.name!r}: {source} is not a model directory (no config.json in "
                                f"{directory}); give a saved model dir, mlflow:<run_id> or an MLflow model URI")
    return directory

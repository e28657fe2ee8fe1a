"""EvaluateConfig: which models answer which benchmarks; the defaults evaluate the embedded model on the synthetic
test split."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.benchmarks import BENCHMARKS, OWN_METRICS
from pipelines.config import OPTIONS
from sp_core.image_options import (
    DEFAULT_ASPECT,
    DEFAULT_DECODING,
    DEFAULT_RESIZE,
    ImageAspectOption,
    ImageDecodingOption,
    ImageResizeOption,
)


@dataclass(config=OPTIONS)
class EvalModel:
    name: str = "tiny-cropping"
    """The model's label in tables and its MLflow run name."""
    source: str = ""
    """A model dir, "mlflow:<run_id>" of a training run, or an MLflow URI (runs:/..., models:/name@alias); "" = the
    embedded default: the most recently finished finetune run of <variant> under train_storage, else the untrained
    tiny one."""
    variant: str = "cropping"
    """The embedded default's SP variant (only where source and endpoint are "")."""
    endpoint: str = ""
    """Answers from an OpenAI-compatible endpoint (its base URL, ending in /v1) instead of a local model."""
    served_model: str = ""
    """The model's name on the endpoint; "" = name."""
    api_key_file: str = ""
    """The endpoint's key, read from this file (a mounted secret)."""
    api_key_env: str = ""
    """The endpoint's key, read from this environment variable (neither: no key)."""

    @property
    def served_name(self) -> str:
        return self.served_model or self.name


@dataclass(config=OPTIONS)
class EvalBenchmark:
    name: str = "synthetic"
    """A paper benchmark (pipelines/benchmarks: vqav2, gqa, pope, mme, mmbench, ...), or your own question file's
    name (with metric)."""
    metric: str = ""
    """Your own question file: the metric it is scored with (exact | vqa | choice | yesno); "" for the paper's
    benchmarks, which have their own scorers."""
    questions: str = ""
    """The question file; "" = the embedded synthetic test split (synthetic only)."""
    images: str = ""
    """The folder the questions' image paths are relative to; "" = the question file's folder."""
    annotations: str = ""
    """Ground truth, where the question file lacks it (pipelines/benchmarks/<name>.py says which file)."""
    submission: bool = False
    """Also write the server submission file (VQAv2 test-dev, MMBench test, ...)."""


@dataclass(config=OPTIONS)
class EvaluateConfig:
    models: list[EvalModel] = field(default_factory=lambda: [EvalModel()])
    """The models that answer, side by side in the comparison."""
    benchmarks: list[EvalBenchmark] = field(default_factory=lambda: [EvalBenchmark()])
    """The benchmarks every model answers."""

    # inference on Ray Data: a pool of model actors, each answering batches of questions in one decode loop
    batch_size: PositiveInt = 8
    """Questions per batch, decoded together."""
    num_actors: PositiveInt = 1
    """Model actors (or Serve replicas with deploy) per model."""
    cpus_per_actor: float = 1.0
    """CPUs Ray reserves for each actor."""
    gpus_per_actor: float = 0.0
    """GPUs per actor (fractions share one)."""
    models_at_once: PositiveInt = 1
    """Models answering side by side, each with its own actor pool (1: one after another)."""
    image_aspect: ImageAspectOption = DEFAULT_ASPECT
    image_resize: ImageResizeOption = DEFAULT_RESIZE
    image_decoding: ImageDecodingOption = DEFAULT_DECODING
    deploy: bool = False
    """Deploy the local models with the project's Serve app (num_actors replicas of cpus/gpus_per_actor each) for the
    evaluation, ask them through its HTTP endpoint on 127.0.0.1:serve_port, and remove the app at the end."""
    serve_port: int = 8000
    """The Serve HTTP port with deploy."""
    endpoint_concurrency: PositiveInt = 16
    """Endpoints: questions in flight per model."""
    endpoint_retries: NonNegativeInt = 5
    """Endpoints: retries of a failed request (429, 5xx, lost connection), with backoff."""
    endpoint_timeout_s: PositiveFloat = 600.0
    """Endpoints: seconds before one request counts as failed."""
    max_questions: NonNegativeInt = 0
    """Evaluate the first N questions of each benchmark (0 = all): smoke runs."""
    max_new_tokens: NonNegativeInt = 0
    """Cap on the answer length; 0 = each benchmark's official setting (128 or 1024)."""

    # outputs
    output_dir: str = ""
    """Answers live in <output_dir>/<model>/<benchmark>/answers.jsonl (resumable); "" = $LLAVA_SP_HOME/eval."""
    experiment: str = "llava-sp-eval"
    """MLflow experiment of the evaluation runs."""
    run_name: str = "evaluate"
    """The parent run's name; each model's run is <run_name>-<model>."""
    attention_maps: NonNegativeInt = 3
    """Images whose DFI attention (paper Fig. 5) is plotted per DFI model; 0 = none."""
    train_storage: str = ""
    """Where the embedded default looks for finetuned models: "" = $LLAVA_SP_HOME/train, where training writes them."""

    @property
    def image_options(self) -> dict[str, str]:
        """How questions' images become pixels, as the model was trained."""
        return {"image_aspect": self.image_aspect, "image_resize": self.image_resize,
                "image_decoding": self.image_decoding}

    @property
    def output_root(self) -> Path:
        from pipelines.defaults import home

        return Path(self.output_dir).absolute() if self.output_dir else home() / "eval"

    def __post_init__(self) -> None:
        problems = []
        names = [model.name for model in self.models]
        if not names or len(set(names)) != len(names):
            problems.append(f"models need unique names, got {names}")
        for benchmark in self.benchmarks:
            if benchmark.metric:
                if benchmark.metric not in OWN_METRICS:
                    problems.append(f"benchmark {benchmark.name}: metric {benchmark.metric!r} is unknown; choose one "
                                    f"of {', '.join(OWN_METRICS)}")
                if benchmark.name in BENCHMARKS:
                    problems.append(f"benchmark {benchmark.name}: a paper benchmark is scored by its own rules; give "
                                    "your own question file (metric=...) another name")
                if not benchmark.questions:
                    problems.append(f"benchmark {benchmark.name}: questions= is required")
            elif benchmark.name not in BENCHMARKS:
                problems.append(f"benchmark {benchmark.name!r} is unknown; known: {', '.join(sorted(BENCHMARKS))} "
                                f"(or your own question file, with metric= one of {', '.join(OWN_METRICS)})")
            elif not benchmark.questions and benchmark.name != "synthetic":
                problems.append(f"benchmark {benchmark.name}: questions= is required (only synthetic has a default)")
        benchmark_names = [benchmark.name for benchmark in self.benchmarks]
        if len(set(benchmark_names)) != len(benchmark_names):
            problems.append(f"each benchmark once per run, got {benchmark_names}")
        for model in self.models:
            if model.endpoint and not model.endpoint.startswith(("http://", "https://")):
                problems.append(f"model {model.name}: endpoint={model.endpoint!r} must be an http(s) URL")
            if model.endpoint and model.source:
                problems.append(f"model {model.name}: give source= (a local model) or endpoint=, not both")
            if model.api_key_file and model.api_key_env:
                problems.append(f"model {model.name}: give api_key_file= or api_key_env=, not both")
        if problems:
            raise ValueError("; ".join(problems))

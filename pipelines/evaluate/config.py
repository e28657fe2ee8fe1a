"""EvaluateConfig: which models answer which benchmarks; the defaults evaluate the embedded model on the synthetic
test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.benchmarks import BENCHMARKS, OWN_METRICS
from sp_core.image_decoding import DEFAULT_DECODING
from sp_core.image_processing import (
    DEFAULT_ASPECT,
    DEFAULT_RESIZE,
    image_option_problems,
)


@dataclass
class EvalModel:
    name: str = "tiny-cropping"  # a column/row label in tables and the MLflow run name
    # A model dir, "mlflow:<run_id>" of a training run, or an MLflow URI (runs:/..., models:/name@alias);
    # "" = the embedded default: the most recently finished finetune run of <variant> under train_storage, else the untrained tiny one.
    source: str = ""
    variant: str = "cropping"  # embedded default only
    # Or answers from an OpenAI-compatible endpoint (the base URL, ending in /v1) instead of a local model:
    endpoint: str = ""
    served_model: str = ""  # the model's name on the endpoint; "" = name
    api_key_file: str = ""  # the endpoint's key, from a file (a mounted secret) ...
    api_key_env: str = ""  # ... or from this environment variable; neither = no key

    @property
    def served_name(self) -> str:
        return self.served_model or self.name


@dataclass
class EvalBenchmark:
    name: str = "synthetic"  # a key of pipelines.benchmarks.BENCHMARKS, or your own benchmark's name (with metric)
    # Your own question file: the metric it is scored with (exact | vqa | choice | yesno, see benchmarks/own.py);
    # "" for the paper's benchmarks, which have their own scorers.
    metric: str = ""
    questions: str = ""  # the question file; "" = the embedded synthetic test split (synthetic only)
    images: str = ""  # folder the questions' image paths are relative to; "" = the question file's folder
    annotations: str = ""  # ground truth where the question file lacks it (see the benchmark's docstring)
    submission: bool = False  # also write the server submission file (VQAv2 test-dev, MMBench test, ...)


@dataclass
class EvaluateConfig:
    models: list[EvalModel] = field(default_factory=lambda: [EvalModel()])
    benchmarks: list[EvalBenchmark] = field(default_factory=lambda: [EvalBenchmark()])

    # inference on Ray Data: a pool of model actors, each answering batches of questions in one decode loop
    batch_size: int = 8
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    models_at_once: int = 1  # models answering side by side, each with its own actor pool (1: one after another)
    gpus_per_actor: float = 0.0
    image_aspect: str = DEFAULT_ASPECT  # as in training: pad (LLaVA-1.5) | square
    image_resize: str = DEFAULT_RESIZE  # as in training: torch | pil (see PreprocessConfig)
    image_decoding: str = DEFAULT_DECODING  # as in training: llava | display (see PreprocessConfig)
    # Deploy the local models with the project's Serve app (num_actors replicas of cpus/gpus_per_actor each) for the
    # evaluation, ask them through its HTTP endpoint on 127.0.0.1:serve_port, and remove the app at the end.
    deploy: bool = False
    serve_port: int = 8000
    # Endpoints: questions in flight per model, retries of a failed request (429, 5xx, lost connection), timeout
    endpoint_concurrency: int = 16
    endpoint_retries: int = 5
    endpoint_timeout_s: float = 600.0
    max_questions: int = 0  # evaluate the first N questions of each benchmark (0 = all): smoke runs
    max_new_tokens: int = 0  # cap on answer length; 0 = each benchmark's official setting (128 or 1024)

    # outputs
    # Answers live in <output_dir>/<model>/<benchmark>/answers.jsonl (resumable); "" = $LLAVA_SP_HOME/eval.
    output_dir: str = ""
    experiment: str = "llava-sp-eval"
    run_name: str = "evaluate"
    attention_maps: int = 3  # images whose DFI attention (paper Fig. 5) is plotted per DFI model; 0 = none
    # Where the embedded default looks for finetuned models: "" = $LLAVA_SP_HOME/train, where training writes them.
    train_storage: str = ""

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
        if self.endpoint_retries < 0:
            problems.append(f"endpoint_retries={self.endpoint_retries} must be >= 0")
        for name in ("batch_size", "num_actors", "models_at_once", "endpoint_concurrency"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        problems.extend(image_option_problems(self.image_aspect, self.image_resize, self.image_decoding))
        if self.max_questions < 0 or self.attention_maps < 0 or self.max_new_tokens < 0:
            problems.append("max_questions, max_new_tokens and attention_maps must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

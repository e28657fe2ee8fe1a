"""One evaluation: every model answers every benchmark, scores go to MLflow, tables compare the models.

MLflow layout: a parent run (the comparison table, markdown + CSV) with one child run per model holding each
benchmark's metrics as `<benchmark>/<metric>`, its answer file, scores.json, its score table, and the DFI attention
maps (paper Fig. 5) under plots/attention/.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from PIL import Image

from pipelines import tracking
from pipelines.benchmarks import Benchmark, EvalQuestion, benchmark_for
from pipelines.config import flatten
from pipelines.defaults import embedded_dataset, home
from pipelines.evaluate import report
from pipelines.evaluate.answer_provenance import (
    AnswerProvenance,
    directory_digest,
    file_digest,
)
from pipelines.evaluate.attention import attention_maps, plot_attention
from pipelines.evaluate.config import EvalBenchmark, EvalModel, EvaluateConfig
from pipelines.evaluate.endpoint import Endpoint, api_key, check_endpoint
from pipelines.evaluate.predict import (
    ActorPool,
    PredictionSummary,
    ThroughEndpoint,
    predict,
    read_answers,
)
from pipelines.model_source import resolve_model_dir
from pipelines.runtime import init_ray
from pipelines.train.run_identity import read_record
from sp_core.image_decoding import load_rgb_image
from sp_core.inference import LlavaSPGenerator

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkFiles:
    questions: Path
    images: Path
    annotations: Path | None
    benchmark: Benchmark


@dataclass
class EvaluationResult:
    scores: dict[str, dict[str, dict[str, float]]]  # model -> benchmark -> metric -> value
    parent_run_id: str
    model_run_ids: dict[str, str]
    tracking_uri: str
    comparison_markdown: str
    synthetic_markdown: str | None
    predictions: dict[str, dict[str, PredictionSummary]] = field(default_factory=dict)


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    # The actors of the models answering at once, plus Ray Data's own read tasks.
    needed = min(config.models_at_once, len(config.models)) * config.num_actors * config.cpus_per_actor + 1
    init_ray(num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)), writes={"output_dir": config.output_dir})
    files = {spec.name: _benchmark_files(spec) for spec in config.benchmarks}
    external = {model.name: _external_endpoint(model, config) for model in config.models if model.endpoint}
    for name, endpoint in external.items():  # a wrong key or model fails here, before any run or question
        check_endpoint(endpoint, f"model {name}")
    uri = tracking.tracking_uri()
    local = {model.name: _local_model_dir(model, config, uri) for model in config.models if not model.endpoint}
    with deployed(local, config) as served:
        sources = {**{name: Answerer(model_dir, served.get(name)) for name, model_dir in local.items()},
                   **{name: Answerer(None, endpoint) for name, endpoint in external.items()}}
        return _evaluate_all(config, files, sources)


@dataclass
class Answerer:
    """Who answers for a model: its weights (model_dir, when local), through an endpoint or through actors."""

    model_dir: Path | None
    endpoint: Endpoint | None


def _evaluate_all(config: EvaluateConfig, files: dict[str, BenchmarkFiles],
                  sources: dict[str, Answerer]) -> EvaluationResult:
    uri, parent = tracking.start_run(config.experiment, config.run_name, tags={"kind": "evaluate"})
    tracking.log_params(uri, parent, flatten(asdict(config)))
    client = MlflowClient(uri)
    result = EvaluationResult({}, parent, {}, uri, "", None)
    try:
        with ThreadPoolExecutor(max_workers=config.models_at_once, thread_name_prefix="evaluate") as pool:
            outcomes = list(pool.map(lambda model: _evaluate_model(model, sources[model.name], config, files, uri,
                                                                   parent), config.models))
        for model, outcome in zip(config.models, outcomes, strict=True):
            result.model_run_ids[model.name] = outcome.run_id
            result.scores[model.name] = outcome.scores
            result.predictions[model.name] = outcome.predictions
        header, rows = report.headline_rows(result.scores)
        result.comparison_markdown = report.markdown(header, rows)
        client.log_text(parent, result.comparison_markdown, "comparison.md")
        client.log_text(parent, report.to_csv(header, rows), "comparison.csv")
        synthetic = report.synthetic_rows(result.scores)
        if synthetic is not None:
            result.synthetic_markdown = report.markdown(*synthetic)
            client.log_text(parent, result.synthetic_markdown, "synthetic_by_question_type.md")
            client.log_text(parent, report.to_csv(*synthetic), "synthetic_by_question_type.csv")
    except BaseException:
        client.set_terminated(parent, status="FAILED")
        raise
    client.set_terminated(parent)
    return result


@dataclass
class ModelOutcome:
    run_id: str  # the model's child run
    scores: dict[str, dict[str, float]]  # benchmark -> metric -> value
    predictions: dict[str, PredictionSummary]  # benchmark -> answer counts and file


def _external_endpoint(model: EvalModel, config: EvaluateConfig) -> Endpoint:
    key = api_key(model.api_key_file, model.api_key_env, f"model {model.name}")
    return Endpoint(model.endpoint.rstrip("/"), model.served_name, key, config.endpoint_retries,
                    config.endpoint_timeout_s)


def _local_model_dir(model: EvalModel, config: EvaluateConfig, uri: str) -> Path:
    return resolve_model_dir(model.source, model.variant, f"model {model.name}",
                             trained_in=config.train_storage or home() / "train", tracking_uri=uri)


@contextmanager
def deployed(model_dirs: dict[str, Path], config: EvaluateConfig) -> Iterator[dict[str, Endpoint]]:
    """With deploy=true: the local models served by the project's Serve app for the duration; name -> endpoint."""
    if not config.deploy or not model_dirs:
        yield {}
        return
    from ray import serve

    from pipelines.serve.config import ModelSpec, ServeConfig
    from pipelines.serve.job import deploy

    serve_config = ServeConfig(
        # float32 as the actor path's generators, so that greedy answers agree token for token
        models=[ModelSpec(name=name, source=str(model_dir), num_replicas=config.num_actors, dtype="float32",
                          cpus_per_replica=config.cpus_per_actor, gpus_per_replica=config.gpus_per_actor)
                for name, model_dir in model_dirs.items()],
        port=config.serve_port, app_name=f"llava-sp-evaluate-{uuid.uuid4().hex[:8]}", max_batch_size=config.batch_size,
        max_waiting=max(64, config.endpoint_concurrency * len(model_dirs)), api_key_env="", **config.image_options)
    url = deploy(serve_config)
    logger.info("deployed %s as Serve app %s at %s", ", ".join(model_dirs), serve_config.app_name, url)
    try:
        endpoints = {name: Endpoint(f"{url}/v1", name, "", config.endpoint_retries, config.endpoint_timeout_s)
                     for name in model_dirs}
        for name, endpoint in endpoints.items():
            check_endpoint(endpoint, f"model {name}")
        yield endpoints
    finally:
        serve.delete(serve_config.app_name)
        if not serve.status().applications:  # Serve ran for this app alone: its HTTP proxy goes too
            serve.shutdown()
        logger.info("removed Serve app %s", serve_config.app_name)


def _evaluate_model(model: EvalModel, answerer: Answerer, config: EvaluateConfig, files: dict[str, BenchmarkFiles],
                    uri: str, parent: str) -> ModelOutcome:
    model_dir = answerer.model_dir
    training_run = _training_run_of(model.source, model_dir, uri) if model_dir is not None else None
    tags = {"mlflow.parentRunId": parent, "kind": "evaluate", "model": model.name}
    if training_run:
        tags["training_run_id"] = training_run
    _, run_id = tracking.start_run(config.experiment, f"{config.run_name}-{model.name}", tags=tags)
    client = MlflowClient(uri)
    if model_dir is not None:
        identity = directory_digest(model_dir)  # the weights' identity, which resumed answers must share
    else:  # an endpoint's weights are out of sight: its URL and model name stand for them
        identity = f"endpoint {answerer.endpoint.base_url} model {answerer.endpoint.model}"
    params = {"model.name": model.name, "model.source": model.source or model.endpoint or "(embedded)",
              "model.dir": str(model_dir or ""), "model.sha256": identity, "benchmarks": ",".join(files)}
    if answerer.endpoint is not None:
        params.update({"model.endpoint": answerer.endpoint.base_url, "model.served_model": answerer.endpoint.model})
    tracking.log_params(uri, run_id, params)
    scores, summaries = {}, {}
    try:
        for name, benchmark_files in files.items():
            scores[name], summaries[name] = _evaluate_benchmark(name, benchmark_files, model, answerer, identity,
                                                                config, client, run_id)
        header, rows = report.headline_rows({model.name: scores})
        client.log_text(run_id, report.markdown(header, rows), "scores.md")
        if training_run:
            # The scores also on the run that trained the model: the runs table then sorts training runs by them.
            client.log_batch(training_run, metrics=[metric for name, values in scores.items()
                                                    for metric in _mlflow_metrics(name, values)])
        if config.attention_maps and model_dir is not None:
            _log_attention_maps(model, model_dir, files, config, client, run_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return ModelOutcome(run_id, scores, summaries)


def _training_run_of(source: str, model_dir: Path, uri: str) -> str | None:
    """The MLflow run that trained the model: mlflow:<run id>, or the run whose checkpoint holds model_dir (its run
    record, two levels up), when it is tracked in this store."""
    if source.startswith("mlflow:"):
        return source.split(":", 1)[1]
    record = read_record(model_dir.parent.parent)
    return record.mlflow_run_id if record is not None and record.tracking_uri == uri else None


def _evaluate_benchmark(name: str, benchmark_files: BenchmarkFiles, model: EvalModel, answerer: Answerer,
                        model_sha256: str, config: EvaluateConfig, client: MlflowClient,
                        run_id: str) -> tuple[dict[str, float], PredictionSummary]:
    benchmark = benchmark_files.benchmark
    out_dir = config.output_root / model.name / name
    questions_path = _limited_questions(benchmark_files.questions, config.max_questions, out_dir)
    questions = benchmark.load_questions(questions_path)
    if config.max_new_tokens:
        for question in questions:
            question.max_new_tokens = min(question.max_new_tokens, config.max_new_tokens)
    provenance = AnswerProvenance(
        model_sha256=model_sha256, questions_sha256=file_digest(questions_path),
        images=str(Path(benchmark_files.images).resolve()),
        generation={"max_new_tokens": config.max_new_tokens, **config.image_options,
                    "answered_by": "actors" if answerer.endpoint is None else "endpoint"},
        model_dir=str(answerer.model_dir or answerer.endpoint.base_url), questions=str(questions_path))
    if answerer.endpoint is not None:
        how: ActorPool | ThroughEndpoint = ThroughEndpoint(answerer.endpoint, config.endpoint_concurrency)
    else:
        how = ActorPool(str(answerer.model_dir), config.batch_size, config.num_actors, config.cpus_per_actor,
                        config.gpus_per_actor, config.image_options)
    summary = predict(questions, how, model.name, benchmark_files.images, out_dir, provenance)
    spec = next(spec for spec in config.benchmarks if spec.name == name)
    if spec.submission:
        submission = benchmark.write_submission(read_answers(summary.answers_path), questions_path, out_dir,
                                                benchmark_files.annotations)
        client.log_artifact(run_id, str(submission), f"submissions/{name}")
    if spec.submission and benchmark_files.annotations is None:
        # A server-scored split (VQAv2 test-dev, VizWiz test, MMBench test): its ground truth is not public.
        logger.info("%s: no annotations, scored by its server from %s", name, submission)
        metrics = {"questions": len(questions)}
    else:
        metrics = benchmark.evaluate(read_answers(summary.answers_path), questions_path, benchmark_files.annotations)
    metrics = {**metrics, "eval_errors": summary.errors}
    if answerer.endpoint is not None:
        metrics["eval_retries"] = summary.retries
    headline = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()
                         if "/" not in key and isinstance(value, (int, float)))  # the per-category ones: in MLflow
    logger.info("%s on %s: %s", model.name, name, headline)
    client.log_batch(run_id, metrics=_mlflow_metrics(name, metrics))
    (out_dir / "scores.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    client.log_artifact(run_id, str(summary.answers_path), f"predictions/{name}")
    client.log_artifact(run_id, str(out_dir / "scores.json"), f"predictions/{name}")
    if (out_dir / "errors.jsonl").is_file():
        client.log_artifact(run_id, str(out_dir / "errors.jsonl"), f"predictions/{name}")
    return metrics, summary


def _benchmark_files(spec: EvalBenchmark) -> BenchmarkFiles:
    benchmark = benchmark_for(spec.name, spec.metric)
    if spec.name == "synthetic" and not spec.questions:
        dataset = embedded_dataset()
        return BenchmarkFiles(dataset.test_jsonl, dataset.root, dataset.metadata_json, benchmark)
    questions = Path(spec.questions)
    if not questions.exists():
        raise FileNotFoundError(f"benchmark {spec.name}: questions={spec.questions} does not exist")
    images = Path(spec.images) if spec.images else questions.parent
    return BenchmarkFiles(questions, images, Path(spec.annotations) if spec.annotations else None, benchmark)


def _limited_questions(path: Path, limit: int, out_dir: Path) -> Path:
    """The first `limit` questions as their own file, so that scores count only the questions asked."""
    if not limit:
        return path
    if path.suffix != ".jsonl":
        raise ValueError(f"max_questions needs a .jsonl question file; {path} is {path.suffix or 'a folder'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [line for line in path.read_text().splitlines() if line.strip()][:limit]
    limited = out_dir / f"questions-first{limit}.jsonl"
    limited.write_text("".join(f"{line}\n" for line in lines))
    if (path.parent / "metadata.json").is_file():  # scorers that look next to the questions still find it
        (out_dir / "metadata.json").write_text((path.parent / "metadata.json").read_text())
    return limited


def _mlflow_metrics(benchmark: str, metrics: dict[str, Any]) -> list:
    from mlflow.entities import Metric

    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./ ")
    timestamp = int(time.time() * 1000)
    return [Metric("".join(c if c in allowed else "_" for c in f"{benchmark}/{key}"), float(value), timestamp, 0)
            for key, value in sorted(metrics.items()) if isinstance(value, (int, float))]


def _log_attention_maps(model: EvalModel, model_dir: Path, files: dict[str, BenchmarkFiles],
                        config: EvaluateConfig, client: MlflowClient, run_id: str) -> None:
    images = _first_images(files, config.attention_maps, config.image_decoding)
    generator = LlavaSPGenerator.from_pretrained(model_dir, aspect=config.image_aspect, resize=config.image_resize)
    maps = attention_maps(generator, [image for _, image in images])
    if maps is None:
        logger.info("%s has no DFI: no attention maps", model.name)
        return
    out_dir = config.output_root / model.name / "attention"
    for index, ((label, image), attention) in enumerate(zip(images, maps, strict=True)):
        path = plot_attention(image, attention, f"{model.name} ({generator.model.config.sp_variant}), {label}",
                              out_dir / f"attention_{index}.png")
        client.log_artifact(run_id, str(path), "plots/attention")


def _first_images(files: dict[str, BenchmarkFiles], count: int, decoding: str) -> list[tuple[str, Image.Image]]:
    """The first `count` distinct question images, for the attention maps of every model."""
    found: list[tuple[str, Image.Image]] = []
    seen: set[str] = set()
    for benchmark_files in files.values():
        questions: list[EvalQuestion] = benchmark_files.benchmark.load_questions(benchmark_files.questions)
        for question in questions:
            if len(found) == count:
                return found
            if question.image and question.image not in seen:
                seen.add(question.image)
                path = benchmark_files.images / question.image
                found.append((question.image, load_rgb_image(path, decoding=decoding)))
    return found

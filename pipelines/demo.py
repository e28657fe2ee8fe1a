"""The whole pipeline on the embedded default, as one run: what `make demo` shows a new user.

synthetic data -> Ray Data preprocessing -> stage 1 -> stage 2 for the LLaVA-1.5 baseline, SP-Cropping and
SP-Pooling -> evaluation on the synthetic test split -> models registered in MLflow -> the Serve endpoint answering
one request with an image. Every step is the real job code (run_stage, evaluate, the Serve app); only the sizes are
small. The results table is printed as measured.

The paper starts all its variants from one pretrained LLM (Vicuna). The demo first makes its own: the tiny LLM
trained on the synthetic captions (a stage-1 run with pretrain_llm), which every variant then starts from
(shared_base); meanwhile Ray Data preprocesses what the variants read. The variants then run both stages side by
side, one Ray Train worker each.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from mlflow import MlflowClient

from pipelines import tracking
from pipelines.defaults import embedded_dataset, embedded_model_dir, home
from pipelines.demo_config import SIDE_BY_SIDE_CPUS, VARIANTS, DemoConfig
from pipelines.evaluate.config import EvalBenchmark, EvalModel, EvaluateConfig
from pipelines.evaluate.run import EvaluationResult, evaluate
from pipelines.model_source import RUN_MODEL_ARTIFACT
from pipelines.runtime import init_ray
from pipelines.shared_base import graft_base_weights
from pipelines.synthetic import SyntheticDataset
from pipelines.train.config import TrainConfig
from pipelines.train.job import STAGE_TEMPLATES, embedded_data_dir, run_stage
from pipelines.train.launch import TrainResult

logger = logging.getLogger(__name__)

@dataclass
class DemoResult:
    base: TrainResult  # the shared tiny LLM, trained on the captions
    trained: dict[str, tuple[TrainResult, TrainResult]]  # name -> (stage 1, stage 2)
    evaluation: EvaluationResult
    registered: dict[str, str]  # name -> models:/ URI
    served_answer: str
    seconds: float


def run_demo(config: DemoConfig) -> DemoResult:
    started = time.perf_counter()
    chosen = [(name, variant) for name, variant in VARIANTS if name in config.variants]
    storage = _fresh_storage()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-early") as early:
        # The data set is drawn and the MLflow store created while Ray starts (its processes mostly wait on each other
        # then), before any worker needs either.
        generated = early.submit(embedded_dataset, config.synthetic)
        prepared = early.submit(tracking.prepare_experiment, config.experiment)
        # A logical CPU for every worker of the runs that train at once, and one for Ray Data beside them.
        at_once = len(chosen) if config.parallel else 1
        init_ray(num_cpus=max(os.cpu_count() or 1, at_once * config.num_workers + 1))
        dataset = generated.result()
        prepared.result()
    base_model = _model_dir(config, "none")
    captions = embedded_data_dir("pretrain", str(base_model), dataset, rows_per_chunk=_rows_per_chunk(dataset))
    with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="demo-train") as pool:
        base_run = pool.submit(_train_base, config, base_model, captions, storage)
        data_dirs = _preprocess_all(chosen, config, dataset)
        base = base_run.result()
        starts = {variant: graft_base_weights(base.model_dir, _model_dir(config, variant),
                                              storage / "starting-models" / variant) for _, variant in chosen}
        trained = _train_all(pool if config.parallel else None, chosen, config, data_dirs, starts, storage)
    sources = {name: f"mlflow:{stage2.run_id}" for name, (_, stage2) in trained.items()}
    registered = _register(trained, base.tracking_uri) if config.register_models else {}
    # Serving and evaluation side by side, all models at once: each spends most of its time starting processes and
    # loading models, which overlap well. Half a CPU per evaluation actor and Serve replica, so that all of them fit
    # in Ray's logical CPUs together.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-serve") as serving:
        served = serving.submit(_serve_one_request, registered or sources, config.serve_port, dataset)
        evaluation = evaluate(EvaluateConfig(
            models=[EvalModel(name=name, source=source) for name, source in sources.items()],
            benchmarks=[EvalBenchmark(name="synthetic", questions=str(dataset.test_jsonl))],
            models_at_once=len(sources), cpus_per_actor=SIDE_BY_SIDE_CPUS,
            max_questions=config.eval_questions, max_new_tokens=config.eval_max_new_tokens, attention_maps=3,
            # Beside this run's checkpoints: answers are resumed from an output dir, and these are new models.
            output_dir=str(home() / "demo" / "eval" / storage.name), experiment=config.experiment,
            run_name="demo-evaluate"))
        served_answer = served.result()
    return DemoResult(base, trained, evaluation, registered, served_answer, time.perf_counter() - started)


def _preprocess_all(chosen: list[tuple[str, str]], config: DemoConfig,
                    dataset: SyntheticDataset) -> dict[str, dict[str, str]]:
    """Both stages' shards for every chosen variant (variant -> stage -> dir). Variants whose rows are the same (same
    tokenizer, image size and image-token count) share their shards: the directories are content-addressed.

    It runs beside the shared base's training: one preprocessing task at a time (each asks for 2 of Ray's CPUs), so
    that the base keeps a core and its row reads are not queued behind preprocessing tasks (1-CPU tasks slowed it
    3x)."""
    return {variant: {stage: embedded_data_dir(stage, str(_model_dir(config, variant)), dataset, cpus_per_task=2.0,
                                               rows_per_chunk=_rows_per_chunk(dataset))
                      for stage in STAGE_TEMPLATES} for _, variant in chosen}


def _rows_per_chunk(dataset: SyntheticDataset) -> int:
    """Each of the demo's data sets in one preprocessing chunk. A chunk is several Ray Data runs, each starting its
    tasks afresh, and resuming by chunk buys nothing for sets rebuilt in seconds; one set of 112-px crops fits in
    the object store."""
    return max(dataset.pretrain_rows, dataset.finetune_rows)


def _model_dir(config: DemoConfig, variant: str) -> Path:
    return embedded_model_dir(variant, **config.model_options(variant))


def _fresh_storage() -> Path:
    """Where this demo's training runs keep their checkpoints: a folder per demo run, because Ray Train resumes a
    run whose name already has checkpoints under its storage path, and a second `make demo` must train afresh."""
    return home() / "demo" / "train" / time.strftime("%Y%m%d-%H%M%S")


def _train_config(config: DemoConfig, variant: str, model: Path, storage: Path) -> TrainConfig:
    return TrainConfig(variant=variant, model=str(model), num_workers=config.num_workers,
                       micro_batch_size=config.micro_batch_size, checkpoint_every=10_000, keep_checkpoints=1,
                       storage_path=str(storage), experiment=config.experiment, log_every=10)


def _train_base(config: DemoConfig, model: Path, captions: str, storage: Path) -> TrainResult:
    """The shared tiny LLM: the whole baseline model but its vision tower, trained on the captions."""
    base = run_stage(replace(_train_config(config, "none", model, storage), stage="pretrain", pretrain_llm=True,
                             max_steps=config.base_steps, lr=config.base_lr, data=captions,
                             run_name="base-llm-captions"))
    logger.info("shared base (LLM on the captions): loss %.3f", base.metrics.get("loss", float("nan")))
    return base


def _train_all(pool: ThreadPoolExecutor | None, chosen: list[tuple[str, str]], config: DemoConfig,
               data_dirs: dict[str, dict[str, str]], starts: dict[str, Path],
               storage: Path) -> dict[str, tuple[TrainResult, TrainResult]]:
    """Both stages of every variant: side by side on the pool's threads (each blocks in Ray Train's fit), or in turn
    without one."""
    if pool is None:
        return {name: _train_variant(name, variant, config, data_dirs[variant], starts[variant], storage)
                for name, variant in chosen}
    futures = {name: pool.submit(_train_variant, name, variant, config, data_dirs[variant], starts[variant], storage)
               for name, variant in chosen}
    return {name: future.result() for name, future in futures.items()}


def _train_variant(name: str, variant: str, config: DemoConfig, data_dirs: dict[str, str], start: Path,
                   storage: Path) -> tuple[TrainResult, TrainResult]:
    common = _train_config(config, variant, start, storage)
    stage1 = run_stage(replace(common, stage="pretrain", max_steps=config.pretrain_steps, lr=config.pretrain_lr,
                               data=data_dirs["pretrain"], run_name=f"pretrain-{name}"))
    logger.info("%s stage 1: loss %.3f", name, stage1.metrics.get("loss", float("nan")))
    stage2 = run_stage(replace(common, stage="finetune", max_steps=config.finetune_steps, lr=config.finetune_lr,
                               mm_projector_lr=config.finetune_lr, init_from=str(stage1.checkpoint),
                               full_finetune=config.full_finetune, lora_r=config.lora_r, lora_alpha=2 * config.lora_r,
                               data=data_dirs["finetune"], run_name=f"finetune-{name}"))
    logger.info("%s stage 2: loss %.3f", name, stage2.metrics.get("loss", float("nan")))
    return stage1, stage2


def _register(trained: dict[str, tuple[TrainResult, TrainResult]], uri: str) -> dict[str, str]:
    """Each stage-2 model directory in the Model Registry as llava-sp-demo-<name>, alias "demo".

    The version's source is the run's model directory (safetensors + processor), not an MLflow-flavoured model:
    `models:/...@demo` then downloads exactly what jobs/serve.py and jobs/evaluate.py load.
    """
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    registered = {}
    for name, (_, stage2) in trained.items():
        model_name = f"llava-sp-demo-{name}"
        try:
            client.create_registered_model(model_name, description=f"LLaVA-SP demo model ({name}), stage 2")
        except MlflowException:  # registered by an earlier demo: add a version
            pass
        source = f"{client.get_run(stage2.run_id).info.artifact_uri}/{RUN_MODEL_ARTIFACT}"
        version = client.create_model_version(model_name, source, run_id=stage2.run_id)
        client.set_registered_model_alias(model_name, "demo", version.version)
        registered[name] = f"models:/{model_name}@demo"
    return registered


def _serve_one_request(sources: dict[str, str], port: int, dataset: SyntheticDataset) -> str:
    """Deploy the last model behind the OpenAI endpoint and ask it about a test image. One model: every replica is a
    process that loads torch and its model, beside the evaluation; jobs/serve.py serves any set of them (the demo
    prints how)."""
    from ray import serve

    from pipelines.serve.config import ModelSpec, ServeConfig
    from pipelines.serve.job import deploy

    model, source = next(reversed(sources.items()))
    config = ServeConfig(models=[ModelSpec(name=model, source=source, cpus_per_replica=SIDE_BY_SIDE_CPUS)],
                         port=port, app_name="llava-sp-demo")
    url = deploy(config)
    question = _first_test_question(dataset)
    try:
        response = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": model, "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "text", "text": question["text"]},
                {"type": "image_url", "image_url": {"url": _data_url(question["image_path"])}}]}]})
        response.raise_for_status()
        answer = response.json()["choices"][0]["message"]["content"]
    finally:
        serve.delete(config.app_name)
    return f"{model} at {url}/v1/chat/completions, asked {question['text']!r} about {question['image']}: " \
           f"{answer!r} (expected {question['answer']!r})"


def _first_test_question(dataset: SyntheticDataset) -> dict:
    import json

    question = json.loads(dataset.test_jsonl.read_text().splitlines()[0])
    return {**question, "image_path": dataset.root / question["image"]}


def _data_url(path: Path) -> str:
    buffer = io.BytesIO(Path(path).read_bytes())
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"

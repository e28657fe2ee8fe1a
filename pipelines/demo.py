"""The whole pipeline on the embedded default, as one run: what `make demo` shows a new user.

synthetic data -> Ray Data preprocessing -> stage 1 -> stage 2 for the LLaVA-1.5 baseline, SP-Cropping and
SP-Pooling -> evaluation on the synthetic test split -> models registered in MLflow -> the Serve endpoint answering
one request with an image. Every step is the real job code (run_stage, evaluate, the Serve app); only the sizes are
small. The results table is printed as measured.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from mlflow import MlflowClient

from pipelines.defaults import embedded_dataset, embedded_model_dir, home
from pipelines.evaluate.config import EvalModel, EvaluateConfig
from pipelines.evaluate.run import EvaluationResult, evaluate
from pipelines.model_source import RUN_MODEL_ARTIFACT
from pipelines.train.config import TrainConfig
from pipelines.train.job import STAGE_TEMPLATES, embedded_data_dir, init_ray_for, run_stage
from pipelines.train.launch import TrainResult

logger = logging.getLogger(__name__)

# The paper's Tab. 1 rows, as tiny models: (table name, sp_variant).
VARIANTS = (("llava-1.5", "none"), ("sp-cropping", "cropping"), ("sp-pooling", "pooling"))


@dataclass
class DemoConfig:
    variants: list[str] = field(default_factory=lambda: [name for name, _ in VARIANTS])  # subset of VARIANTS names
    # Stage 1 / stage 2 sizes that fit the 10-minute budget on 2 CPUs (README: what the tiny models learn). The tiny
    # LLM starts from random weights, so stage 1 (projector only, LLM frozen) can do little, and stage 2 trains the
    # whole LLM: LoRA on a random LLM never gets past giving one answer to every question.
    pretrain_steps: int = 20
    pretrain_lr: float = 2e-3
    finetune_steps: int = 450
    finetune_lr: float = 2e-3
    full_finetune: bool = True  # False: LoRA as in the paper's script (which starts from a pretrained Vicuna)
    lora_r: int = 16  # the tiny LLM is 64 wide: the paper's r=128 would be wider than the model
    micro_batch_size: int = 2
    num_workers: int = 2
    eval_questions: int = 0  # 0 = the whole synthetic test split
    eval_max_new_tokens: int = 8  # answers are one word
    register_models: bool = True  # MLflow Model Registry: llava-sp-demo-<variant>@demo
    serve_port: int = 8000
    experiment: str = "llava-sp-demo"

    def __post_init__(self) -> None:
        known = [name for name, _ in VARIANTS]
        unknown = [name for name in self.variants if name not in known]
        if unknown or not self.variants:
            raise ValueError(f"variants={self.variants}; choose from {known}")
        for name in ("pretrain_steps", "finetune_steps", "micro_batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


@dataclass
class DemoResult:
    trained: dict[str, tuple[TrainResult, TrainResult]]  # name -> (stage 1, stage 2)
    evaluation: EvaluationResult
    registered: dict[str, str]  # name -> models:/ URI
    served_answer: str
    seconds: float


def run_demo(config: DemoConfig) -> DemoResult:
    started = time.perf_counter()
    embedded_dataset()  # generated once, before any worker needs it
    chosen = [(name, variant) for name, variant in VARIANTS if name in config.variants]
    _preprocess_all(chosen, config)
    trained = {name: _train_variant(name, variant, config) for name, variant in chosen}
    sources = {name: f"mlflow:{stage2.run_id}" for name, (_, stage2) in trained.items()}
    evaluation = evaluate(EvaluateConfig(
        models=[EvalModel(name=name, source=source) for name, source in sources.items()],
        max_questions=config.eval_questions, max_new_tokens=config.eval_max_new_tokens, attention_maps=3,
        output_dir=str(home() / "demo" / "eval"), experiment=config.experiment, run_name="demo-evaluate"))
    registered = _register(trained, evaluation.tracking_uri) if config.register_models else {}
    served_answer = _serve_one_request(registered or sources, config.serve_port)
    return DemoResult(trained, evaluation, registered, served_answer, time.perf_counter() - started)


def _preprocess_all(chosen: list[tuple[str, str]], config: DemoConfig) -> None:
    """Both stages' shards for every chosen variant, back to back, before any training; run_stage then finds them
    (content-addressed). Ray Data's workers stay warm between these runs: one that follows a training run starts
    cold and spends ~10 s on 2 cores importing before its first row."""
    init_ray_for(_train_config(config, chosen[0][1]))  # the same Ray the training runs join
    for _, variant in chosen:
        model_dir = str(embedded_model_dir(variant))
        for stage in STAGE_TEMPLATES:
            embedded_data_dir(stage, model_dir)


def _train_config(config: DemoConfig, variant: str) -> TrainConfig:
    return TrainConfig(variant=variant, num_workers=config.num_workers, micro_batch_size=config.micro_batch_size,
                       checkpoint_every=10_000, keep_checkpoints=1, storage_path=str(home() / "demo" / "train"),
                       experiment=config.experiment, log_every=10)


def _train_variant(name: str, variant: str, config: DemoConfig) -> tuple[TrainResult, TrainResult]:
    common = _train_config(config, variant)
    stage1 = run_stage(replace(common, stage="pretrain", max_steps=config.pretrain_steps, lr=config.pretrain_lr,
                               run_name=f"pretrain-{name}"))
    logger.info("%s stage 1: loss %.3f", name, stage1.metrics.get("loss", float("nan")))
    stage2 = run_stage(replace(common, stage="finetune", max_steps=config.finetune_steps, lr=config.finetune_lr,
                               mm_projector_lr=config.finetune_lr, init_from=str(stage1.checkpoint),
                               full_finetune=config.full_finetune, lora_r=config.lora_r, lora_alpha=2 * config.lora_r,
                               run_name=f"finetune-{name}"))
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


def _serve_one_request(sources: dict[str, str], port: int) -> str:
    """Deploy every model behind the OpenAI endpoint and ask one of them about a test image."""
    from ray import serve

    from pipelines.serve.config import ModelSpec, ServeConfig
    from pipelines.serve.job import deploy

    config = ServeConfig(models=[ModelSpec(name=name, source=source, cpus_per_replica=0.5)
                                 for name, source in sources.items()], port=port, app_name="llava-sp-demo")
    url = deploy(config)
    question = _first_test_question()
    model = next(reversed(sources))
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


def _first_test_question() -> dict:
    import json

    dataset = embedded_dataset()
    question = json.loads(dataset.test_jsonl.read_text().splitlines()[0])
    return {**question, "image_path": dataset.root / question["image"]}


def _data_url(path: Path) -> str:
    buffer = io.BytesIO(Path(path).read_bytes())
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"

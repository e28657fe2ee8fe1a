"""The paper's ablations (Tabs. 3-6) as one sweep: each row trained (both stages), evaluated, compared in MLflow.

A row is a file under infra/configs/ablations/ (its projector options and where it sits in the paper). For every
chosen row the sweep builds the starting model (the tiny one, sharing the vision tower and LLM weights across rows
so that only the projector differs; or, with base_llm + vision_tower, the real one), runs stage 1 and stage 2 as
Ray trainers, evaluates on the synthetic test split, and files it all under one MLflow parent run:

    sweep (parent: comparison table, markdown + CSV, laid out by table and row)
      variant-<row> (child: the row's options, projector size, final losses, scores)
        pretrain-<row>, finetune-<row>, the evaluation run   (grandchildren)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mlflow import MlflowClient

from pipelines import tracking
from pipelines.defaults import embedded_dataset, embedded_model_dir, home
from pipelines.evaluate import report
from pipelines.evaluate.config import EvalModel, EvaluateConfig
from pipelines.evaluate.run import evaluate
from pipelines.sweep_config import AblationRow, SweepConfig, load_row
from pipelines.train.config import TrainConfig
from pipelines.train.job import run_stage

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"


@dataclass
class SweepResult:
    parent_run_id: str
    tracking_uri: str
    variant_run_ids: dict[str, str]
    table_markdown: str


def run_sweep(config: SweepConfig) -> SweepResult:
    rows = [load_row(name) for name in config.rows]
    embedded_dataset()
    uri, parent = tracking.start_run(config.experiment, "sweep", tags={"kind": "sweep"})
    tracking.log_params(uri, parent, {"rows": ",".join(config.rows), **{key: value for key, value in
                                                                        asdict(config).items() if key != "rows"}})
    client = MlflowClient(uri)
    variant_runs, results = {}, {}
    try:
        for row in rows:
            variant_runs[row.name], results[row.name] = _run_row(row, config, uri, parent)
        header, table = _comparison(rows, results)
        markdown = report.markdown(header, table)
        client.log_text(parent, markdown, "ablations.md")
        client.log_text(parent, report.to_csv(header, table), "ablations.csv")
    except BaseException:
        client.set_terminated(parent, status="FAILED")
        raise
    client.set_terminated(parent)
    return SweepResult(parent, uri, variant_runs, markdown)


def _run_row(row: AblationRow, config: SweepConfig, uri: str, parent: str) -> tuple[str, dict]:
    client = MlflowClient(uri)
    _, variant_run = tracking.start_run(config.experiment, f"variant-{row.name}",
                                        tags={PARENT_TAG: parent, "kind": "sweep-variant", "table": row.table})
    tracking.log_params(uri, variant_run, {**asdict(row)})
    model_dir = _starting_model(row, config)
    common = TrainConfig(model=str(model_dir), variant=row.name, num_workers=config.num_workers,
                         micro_batch_size=config.micro_batch_size, checkpoint_every=10_000, keep_checkpoints=1,
                         storage_path=str(home() / "sweep" / "train"), experiment=config.experiment, lr=config.lr,
                         log_every=5)
    stage1 = run_stage(replace(common, stage="pretrain", max_steps=config.pretrain_steps,
                               run_name=f"pretrain-{row.name}"))
    stage2 = run_stage(replace(common, stage="finetune", max_steps=config.finetune_steps, mm_projector_lr=config.lr,
                               init_from=str(stage1.checkpoint), lora_r=16, lora_alpha=32,
                               run_name=f"finetune-{row.name}"))
    evaluation = evaluate(EvaluateConfig(models=[EvalModel(name=row.name, source=str(stage2.model_dir))],
                                         max_questions=config.eval_questions, max_new_tokens=8, attention_maps=2,
                                         output_dir=str(home() / "sweep" / "eval"), experiment=config.experiment,
                                         run_name=f"evaluate-{row.name}"))
    for run_id in (stage1.run_id, stage2.run_id, evaluation.parent_run_id):
        client.set_tag(run_id, PARENT_TAG, variant_run)  # nest the stage and evaluation runs under the variant
    scores = evaluation.scores[row.name]["synthetic"]
    result = {"pretrain_loss": stage1.metrics.get("loss", float("nan")),
              "finetune_loss": stage2.metrics.get("loss", float("nan")),
              "projector_parameters": _projector_parameters(stage2.model_dir), **scores}
    for key, value in result.items():
        if isinstance(value, (int, float)):
            client.log_metric(variant_run, key.replace("/", "_"), float(value))
    client.set_terminated(variant_run)
    return variant_run, result


def _starting_model(row: AblationRow, config: SweepConfig) -> Path:
    directory = home() / "sweep" / "models" / row.name
    if (directory / "config.json").is_file():
        return directory
    if config.base_llm:
        from sp_core.init_model import build_initial_model

        return build_initial_model(config.base_llm, config.vision_tower, directory, **row.model_options())
    return _tiny_row_model(row, directory)


def _tiny_row_model(row: AblationRow, directory: Path) -> Path:
    """The tiny model of this row with the vision tower, patch MLP and LLM of the embedded baseline, so rows differ
    only in their SP modules (which keep their own initialisation)."""
    from pipelines.shared_base import graft_base_weights
    from sp_core.tiny import save_tiny_model

    save_tiny_model(directory, seed=0, **row.model_options())
    return graft_base_weights(embedded_model_dir("none"), directory, directory)


def _projector_parameters(model_dir: Path) -> int:
    from safetensors.torch import load_file

    weights = load_file(model_dir / "model.safetensors")
    return sum(tensor.numel() for key, tensor in weights.items() if "multi_modal_projector" in key)


def _comparison(rows: list[AblationRow], results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """One line per row, grouped by table as the paper lays them out."""
    types = sorted({key.split("/")[0] for result in results.values() for key in result if key.endswith("/accuracy")})
    header = ["table", "row", "spatial tokens", "projector params", "pretrain loss", "finetune loss", "accuracy",
              *types]
    lines = []
    for row in sorted(rows, key=lambda item: (item.table, rows.index(item))):
        result = results[row.name]
        tokens = 0 if row.sp_variant == "none" else row.sp_num_tokens
        lines.append([row.table, row.row, str(tokens), f"{result['projector_parameters']:,}",
                      f"{result['pretrain_loss']:.3f}", f"{result['finetune_loss']:.3f}",
                      f"{result['accuracy']:.3f}", *(f"{result.get(f'{kind}/accuracy', float('nan')):.3f}"
                                                     for kind in types)])
    return header, lines

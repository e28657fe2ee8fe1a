"""SweepConfig: which rows of the paper's ablation tables a sweep trains and compares; a row is a file under
infra/configs/ablations/ (its projector options and where it sits in the paper)."""

from __future__ import annotations

from dataclasses import asdict, field
from pathlib import Path

import yaml
from pydantic import PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS, StrList, load_config
from sp_core.sp_options import SPDfi, SPDfiKernel, SPExtractor, SPNumTokens, SPVariant

ABLATIONS_DIR = Path(__file__).resolve().parents[1] / "infra" / "configs" / "ablations"


@dataclass(config=OPTIONS)
class AblationRow:
    """One row of the paper's ablation tables: the projector options that make it."""

    name: str = ""
    """The row's file name under infra/configs/ablations/."""
    table: str = ""
    """The paper's table, e.g. "Tab. 4"."""
    row: str = ""
    """The row label as the paper prints it."""
    sp_variant: SPVariant = "cropping"
    sp_num_tokens: SPNumTokens = 6
    sp_extractor: SPExtractor = "conv"
    sp_dfi: SPDfi = True
    sp_dfi_kernel: SPDfiKernel = 16

    def model_options(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key.startswith("sp_")}


@dataclass(config=OPTIONS)
class SweepConfig:
    rows: StrList = field(default_factory=lambda: ["tab6-baseline", "tab6-sfe-cropping", "tab6-dfi-cropping-k16"])
    """The rows to train and compare (listed under --help)."""
    base_llm: str = ""
    """Real weights: the LLM (dir or hub id) each row's starting model is built from with llava-sp-init, with
    vision_tower; both "" = tiny models."""
    vision_tower: str = ""
    """Real weights: the vision tower (dir or hub id), with base_llm."""
    pretrain_steps: PositiveInt = 20
    """Stage-1 optimizer steps per row."""
    finetune_steps: PositiveInt = 30
    """Stage-2 optimizer steps per row."""
    lr: float = 2e-3
    """Learning rate of both stages."""
    micro_batch_size: PositiveInt = 4
    """Rows per worker per forward pass."""
    num_workers: PositiveInt = 2
    """Ray Train workers per run."""
    eval_questions: int = 60
    """Questions of the synthetic test split each row answers (0 = all)."""
    experiment: str = "llava-sp-sweep"
    """MLflow experiment of the sweep's runs."""

    def __post_init__(self) -> None:
        problems = []
        known = sorted(path.stem for path in ABLATIONS_DIR.glob("*.yaml"))
        unknown = [row for row in self.rows if row not in known]
        if unknown or not self.rows:
            problems.append(f"rows {unknown or '[]'} unknown; available: {', '.join(known)}")
        if bool(self.base_llm) != bool(self.vision_tower):
            problems.append("base_llm and vision_tower go together (real weights), or both stay empty (tiny)")
        if problems:
            raise ValueError("; ".join(problems))


def load_row(name: str) -> AblationRow:
    return load_config(AblationRow, ABLATIONS_DIR / f"{name}.yaml")


def describe_rows() -> str:
    """The available rows, for --help and error messages."""
    lines = []
    for path in sorted(ABLATIONS_DIR.glob("*.yaml")):
        row = yaml.safe_load(path.read_text())
        lines.append(f"  {path.stem:24s} {row['table']}: {row['row']}")
    return "\n".join(lines)

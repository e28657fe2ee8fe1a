"""Every job's --help lists every option of its config with type, default and meaning, without loading torch; and
--print-config prints a config that --config reads back."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import get_args

import pytest

from pipelines.benchmarks.own import METRICS
from pipelines.benchmarks.score_cli import OwnMetric, ScoreConfig
from pipelines.commands.convert import ConvertConfig
from pipelines.commands.init_model import InitConfig
from pipelines.config import load_config
from pipelines.config_help import options
from pipelines.config_reference import reference
from pipelines.data.config import PreprocessConfig
from pipelines.demo_config import DemoConfig
from pipelines.evaluate.config import EvaluateConfig
from pipelines.serve.config import ServeConfig
from pipelines.sweep_config import SweepConfig
from pipelines.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
# Each command (a job, or the module behind a console script: llava-sp-init, llava-sp-convert) -> its config.
JOBS = {"jobs/preprocess.py": PreprocessConfig, "jobs/pretrain.py": TrainConfig, "jobs/finetune.py": TrainConfig,
        "jobs/evaluate.py": EvaluateConfig, "jobs/serve.py": ServeConfig, "jobs/sweep.py": SweepConfig,
        "jobs/demo.py": DemoConfig, "jobs/score.py": ScoreConfig, "-m pipelines.commands.init_model": InitConfig,
        "-m pipelines.commands.convert": ConvertConfig}
HEAVY = {"torch", "deepspeed", "transformers", "ray", "mlflow"}


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("job", JOBS)
def test_help_lists_every_option_with_type_default_and_meaning_without_loading_torch(job):
    done = _run("-X", "importtime", *job.split(), "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert not HEAVY & imported, f"{job} --help imports {HEAVY & imported}"
    listed = [option for option in options(JOBS[job]) if not option.group]
    for option in listed:
        assert re.search(rf"^  {re.escape(option.name)} \(.+, default .+\)$", done.stdout, re.M), \
            f"{job}: {option.name} not listed"
        assert option.meaning, f"{job}: option {option.name} has no meaning under it"
    assert len(listed) >= 5


def test_a_job_names_the_allowed_values_of_an_option():
    help_text = _run("jobs/pretrain.py", "--help").stdout
    assert re.search(r"^  precision \(auto \| bf16 \| fp16 \| fp32, default auto\)$", help_text, re.M)
    assert re.search(r"^  zero_stage \(2 \| 3, default 2\)$", help_text, re.M)


def test_print_config_prints_the_whole_config_that_config_reads_back(tmp_path):
    overrides = ["models.0.name=mine", "benchmarks.0.name=pope", "benchmarks.0.questions=q.jsonl", "batch_size=3"]
    done = _run("jobs/evaluate.py", "--print-config", *overrides)
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "printed.yaml").write_text(done.stdout)
    printed = load_config(EvaluateConfig, tmp_path / "printed.yaml")
    assert printed == load_config(EvaluateConfig, None, overrides)
    assert printed.models[0].name == "mine" and printed.batch_size == 3
    assert "endpoint_timeout_s: 600.0" in done.stdout  # every option, defaults included


def test_a_bad_option_fails_in_one_line_naming_it():
    done = _run("jobs/finetune.py", "models.0.name=x", "lr=fast")
    assert done.returncode == 2
    assert "unknown option 'models'" in done.stderr and "option 'lr' = 'fast'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_score_job_offers_exactly_the_metrics_of_your_own_question_files():
    assert set(get_args(OwnMetric)) == set(METRICS)


def test_the_scripts_of_the_project_are_these_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"llava-sp-init": "pipelines.commands.init_model:main",
                       "llava-sp-convert": "pipelines.commands.convert:main"}


def test_the_configuration_reference_in_docs_is_what_the_config_classes_say():
    generated = reference()
    assert (ROOT / "docs" / "configuration.md").read_text() == generated, \
        "docs/configuration.md is stale: .venv/bin/python -m pipelines.config_reference > docs/configuration.md"
    for job in JOBS:
        command = job.removeprefix("-m ")
        assert command.replace("pipelines.commands.init_model", "llava-sp-init").replace(
            "pipelines.commands.convert", "llava-sp-convert") in generated

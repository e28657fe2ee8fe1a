"""docs/configuration.md: every command's options, generated from the config classes (a test keeps the file equal
to this output).

    .venv/bin/python -m pipelines.config_reference > docs/configuration.md
"""

from __future__ import annotations

import importlib

from pipelines.config_help import options

# The command a user types -> "module:ConfigClass".
COMMANDS = {
    "python jobs/preprocess.py": "pipelines.data.config:PreprocessConfig",
    "python jobs/pretrain.py, python jobs/finetune.py": "pipelines.train.config:TrainConfig",
    "python jobs/evaluate.py": "pipelines.evaluate.config:EvaluateConfig",
    "python jobs/score.py": "pipelines.benchmarks.score_cli:ScoreConfig",
    "python jobs/serve.py": "pipelines.serve.config:ServeConfig",
    "python jobs/sweep.py": "pipelines.sweep_config:SweepConfig",
    "python jobs/demo.py": "pipelines.demo_config:DemoConfig",
    "llava-sp-init": "pipelines.commands.init_model:InitConfig",
    "llava-sp-convert": "pipelines.commands.convert:ConvertConfig",
}


def config_class(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def reference() -> str:
    lines = ["# Configuration reference", "",
             "Every command takes `key=value` arguments and `--config FILE` (YAML with the same keys); `--help` lists",
             "the same options, `--print-config` prints the whole configuration as YAML, `--verbose` prints Ray's",
             "and the libraries' logs too. A list's item is set by its index: `models.0.name=x`. This file is",
             "generated: `.venv/bin/python -m pipelines.config_reference > docs/configuration.md`.", ""]
    for command, target in COMMANDS.items():
        lines += [f"## `{command}`", "", "| option | type | default | meaning |", "|---|---|---|---|"]
        for option in options(config_class(target)):
            meaning = option.meaning.replace("|", "\\|")
            if option.group:
                lines.append(f"| `{option.name}.*` | | | {meaning} |")
            else:
                lines.append(f"| `{option.name}` | {option.kind.replace('|', '/')} | `{option.default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")

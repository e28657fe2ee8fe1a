"""Which training run a configuration is: its name, and whether the run of that name on disk may be resumed.

A run directory (<storage>/<run name>/) holds Ray Train's checkpoints and a record of the run (RUN_RECORD): the
settings that decide its result, its MLflow run, and whether it finished. Running the same name again resumes the
run only when those settings are unchanged; a changed setting is a new run. The default name says the stage and
variant and ends with a short hash of the deciding settings, so that changing one gives a new name by itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.train.config import TrainConfig

RUN_RECORD = "llava_sp_run.json"
# Settings that do not change what a run computes: where it is written and tracked, how often it checkpoints, logs
# and validates, the CPUs and threads it gets, and how this invocation treats an existing run.
NOT_DECIDING = frozenset({"run_name", "experiment", "storage_path", "checkpoint_every", "keep_checkpoints",
                          "max_failures", "log_every", "torch_threads", "cpus_per_worker", "placement_strategy",
                          "resume", "resume_from", "validation_data", "eval_every", "max_validation_rows"})


class RunChangedError(ValueError):
    """An existing run of this name was made with other deciding settings."""


@dataclass
class RunRecord:
    settings: dict[str, Any]
    tracking_uri: str
    mlflow_run_id: str
    finished: bool = False
    checkpoint: str = ""  # the final checkpoint, once finished
    metrics: dict[str, Any] = field(default_factory=dict)  # the final metrics, once finished


def deciding_settings(config: TrainConfig, data_dir: str | dict[str, float]) -> dict[str, Any]:
    """What decides the result: every setting but NOT_DECIDING, and the data set actually read."""
    settings = {name: value for name, value in asdict(config).items() if name not in NOT_DECIDING}
    settings["data_dir"] = data_dir
    return settings


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(config: TrainConfig, data_dir: str | dict[str, float]) -> str:
    """config.run_name, or <stage>-<variant>-<hash of the deciding settings>."""
    return config.run_name or f"{config.stage}-{config.variant}-{settings_hash(deciding_settings(config, data_dir))}"


def read_record(run_dir: Path) -> RunRecord | None:
    path = run_dir / RUN_RECORD
    return RunRecord(**json.loads(path.read_text())) if path.is_file() else None


def write_record(run_dir: Path, record: RunRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = run_dir / f".{RUN_RECORD}.tmp"
    temporary.write_text(json.dumps(asdict(record), indent=1, sort_keys=True, default=str))
    temporary.replace(run_dir / RUN_RECORD)  # atomic: a killed job never leaves half a record


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Setting -> (recorded value, value now), for every setting that differs."""
    names = sorted(set(before) | set(now))
    return {name: (before.get(name), now.get(name)) for name in names if before.get(name) != now.get(name)}


def check_resumable(run_dir: Path, record: RunRecord, settings: dict[str, Any],
                    force: bool) -> dict[str, tuple[Any, Any]]:
    """The deciding settings that changed since the run on disk was made; RunChangedError when any did, unless
    forced."""
    changed = changed_settings(record.settings, settings)
    if changed and not force:
        listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changed.items())
        raise RunChangedError(
            f"run {run_dir.name} in {run_dir.parent} was made with other settings ({listed}). Resuming it would mix "
            "them. Give the run another name (run_name=..., or leave run_name unset for one that follows the "
            "settings), or resume=force to go on from its last checkpoint with the new settings.")
    return changed


def latest_finished_run(storage_root: Path, stage: str, variant: str) -> RunRecord | None:
    """The most recently finished run of this stage and variant under storage_root whose final checkpoint is still
    there, or None."""
    finished = []
    for path in Path(storage_root).glob(f"*/{RUN_RECORD}"):
        record = read_record(path.parent)
        if (record is not None and record.finished and record.settings.get("stage") == stage
                and record.settings.get("variant") == variant and (Path(record.checkpoint) / "model").is_dir()):
            finished.append((path.stat().st_mtime, record))
    return max(finished, key=lambda item: item[0])[1] if finished else None

"""Run identity: a changed deciding setting is a new run; an existing run resumes only when nothing deciding
changed; the newest finished run of a stage and variant is found by its record."""

import os
from dataclasses import replace

import pytest

from pipelines.train.config import TrainConfig
from pipelines.train.run_identity import (
    RunChangedError,
    RunRecord,
    check_resumable,
    deciding_settings,
    latest_finished_run,
    read_record,
    run_name,
    write_record,
)

DATA = "/data/llava558k-0123abcd"


def test_the_default_name_follows_the_deciding_settings_only():
    config = TrainConfig(stage="pretrain", variant="pooling", lr=1e-3)
    name = run_name(config, DATA)
    assert name.startswith("pretrain-pooling-") and len(name) == len("pretrain-pooling-") + 8
    assert run_name(replace(config, lr=3e-4), DATA) != name
    assert run_name(config, DATA + "-other") != name  # another data set is another run
    for unchanged in ({"checkpoint_every": 5}, {"storage_path": "/elsewhere"}, {"experiment": "x"},
                      {"log_every": 10}, {"torch_threads": 4}, {"resume": "force"}):
        assert run_name(replace(config, **unchanged), DATA) == name, unchanged
    assert run_name(replace(config, run_name="mine"), DATA) == "mine"


def test_a_changed_setting_refuses_to_resume_naming_it_unless_forced(tmp_path):
    config = TrainConfig(stage="pretrain", lr=1e-3)
    record = RunRecord(deciding_settings(config, DATA), "sqlite:///x.db", "run-1")
    run_dir = tmp_path / "mine"
    check_resumable(run_dir, record, deciding_settings(replace(config, checkpoint_every=3), DATA), force=False)
    with pytest.raises(RunChangedError) as refused:
        check_resumable(run_dir, record, deciding_settings(replace(config, lr=3e-4), DATA), force=False)
    message = str(refused.value)
    assert "lr: 0.001 -> 0.0003" in message and "run_name=" in message and "resume=force" in message
    check_resumable(run_dir, record, deciding_settings(replace(config, lr=3e-4), DATA), force=True)


def test_the_record_round_trips_and_the_newest_finished_run_is_found(tmp_path):
    def finished(name: str, variant: str, stage: str = "pretrain", age_s: float = 0.0):
        checkpoint = tmp_path / name / "checkpoint_1"
        (checkpoint / "model").mkdir(parents=True)
        config = TrainConfig(stage=stage, variant=variant)
        write_record(tmp_path / name, RunRecord(deciding_settings(config, DATA), "uri", name, finished=True,
                                                checkpoint=str(checkpoint), metrics={"step": 4}))
        path = tmp_path / name / "llava_sp_run.json"
        os.utime(path, (path.stat().st_atime - age_s, path.stat().st_mtime - age_s))

    finished("old", "cropping", age_s=100)
    finished("new", "cropping")
    finished("pooling", "pooling")
    finished("stage2", "cropping", stage="finetune")
    unfinished = TrainConfig(stage="pretrain", variant="cropping")
    write_record(tmp_path / "running", RunRecord(deciding_settings(unfinished, DATA), "uri", "running"))
    assert read_record(tmp_path / "new").metrics == {"step": 4}
    assert latest_finished_run(tmp_path, "pretrain", "cropping").mlflow_run_id == "new"
    assert latest_finished_run(tmp_path, "finetune", "cropping").mlflow_run_id == "stage2"
    assert latest_finished_run(tmp_path, "pretrain", "none") is None

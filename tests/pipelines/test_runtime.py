"""Local Ray start-up settings (pipelines/runtime.py)."""

import os

import pytest

from pipelines.runtime import (
    LOCAL_TRAIN_SETTINGS,
    PREEMPTION_WATCHER_ENV,
    TRAIN_POLL_ENV,
    use_local_train_settings,
)


@pytest.mark.parametrize("name", sorted(LOCAL_TRAIN_SETTINGS))
def test_a_local_ray_gets_its_training_settings_unless_the_environment_says_otherwise(monkeypatch, name):
    monkeypatch.delenv(name, raising=False)
    use_local_train_settings()
    assert os.environ[name] == LOCAL_TRAIN_SETTINGS[name]
    monkeypatch.setenv(name, "3")
    use_local_train_settings()
    assert os.environ[name] == "3"


def test_the_settings_are_variables_this_ray_train_reads_and_change_its_defaults():
    from ray.train.v2._internal import constants

    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR == TRAIN_POLL_ENV
    assert float(LOCAL_TRAIN_SETTINGS[TRAIN_POLL_ENV]) < constants.DEFAULT_HEALTH_CHECK_INTERVAL_S
    assert constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR == PREEMPTION_WATCHER_ENV
    assert constants.DEFAULT_ENABLE_PREEMPTION_WATCHER and LOCAL_TRAIN_SETTINGS[PREEMPTION_WATCHER_ENV] == "0"
    assert set(LOCAL_TRAIN_SETTINGS) <= constants.ENV_VARS_TO_PROPAGATE  # reaches the controller and workers

"""Local Ray start-up settings (pipelines/runtime.py)."""

import os

from pipelines.runtime import LOCAL_TRAIN_POLL_S, TRAIN_POLL_ENV, use_local_train_poll


def test_a_local_ray_polls_training_workers_often_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv(TRAIN_POLL_ENV, raising=False)
    use_local_train_poll()
    assert os.environ[TRAIN_POLL_ENV] == LOCAL_TRAIN_POLL_S
    monkeypatch.setenv(TRAIN_POLL_ENV, "3")
    use_local_train_poll()
    assert os.environ[TRAIN_POLL_ENV] == "3"


def test_the_poll_variable_is_the_one_this_ray_train_reads():
    from ray.train.v2._internal.constants import DEFAULT_HEALTH_CHECK_INTERVAL_S, HEALTH_CHECK_INTERVAL_S_ENV_VAR

    assert HEALTH_CHECK_INTERVAL_S_ENV_VAR == TRAIN_POLL_ENV
    assert float(LOCAL_TRAIN_POLL_S) < DEFAULT_HEALTH_CHECK_INTERVAL_S

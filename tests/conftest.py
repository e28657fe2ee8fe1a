"""Shared fixtures: the tiny tokenizer and tiny LLaVA-SP models, built locally (nothing is downloaded)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from pipelines.runtime import use_local_train_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
use_local_train_settings()  # before any Ray starts: the session's, multi-node and `ray start` clusters inherit it


@pytest.fixture(autouse=True)
def _output_settings_stay_with_their_test():
    """A job's main() run in-process sets the output settings of a program (pipelines.output): undo them after."""
    from pipelines.output import QUIET_ENVIRONMENT, QUIET_LOGGERS, VERBOSE_ENV

    names = (VERBOSE_ENV, *QUIET_ENVIRONMENT)
    saved = {name: os.environ.get(name) for name in names}
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from sp_core.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SP-Cropping (+DFI) model saved with tokenizer and processor, as a real checkpoint dir would be."""
    from sp_core.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "sp-cropping", seed=0, sp_variant="cropping")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (integration tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """sp_core's tests start no Ray, so they run first: later, the session's Ray and its idle workers hold several GB,
    and the paper-width test, which needs several GB itself, would run short of memory."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/sp_core/"))

import os

import pytest


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory):
    """One LLAVA_SP_HOME for the session: the embedded models, the synthetic data set and its preprocessed shards are
    content-addressed and never modified once written, so the modules share them instead of each rebuilding them."""
    return tmp_path_factory.mktemp("embedded-home")


@pytest.fixture(scope="module")
def environment(tmp_path_factory, embedded_home):
    """A private MLflow store and scratch directory for one test module, with the session's LLAVA_SP_HOME."""
    root = tmp_path_factory.mktemp("home")
    saved = {key: os.environ.get(key) for key in ("LLAVA_SP_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["LLAVA_SP_HOME"] = str(embedded_home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

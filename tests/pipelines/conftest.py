import os

import pytest


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """A private LLAVA_SP_HOME and MLflow store for one test module (the embedded model and data live there)."""
    root = tmp_path_factory.mktemp("home")
    saved = {key: os.environ.get(key) for key in ("LLAVA_SP_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["LLAVA_SP_HOME"] = str(root / "home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

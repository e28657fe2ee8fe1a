"""The local cache of MLflow artifacts, against a real MLflow store (sqlite, artifacts in a folder): nothing mocked."""

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines import artifact_cache, tracking
from pipelines.artifact_cache import cache_root, cached_artifacts
from pipelines.model_source import resolve_model_dir

MODEL_FILES = {"config.json": b'{"model_type": "llava_sp"}', "model.safetensors": b"weights of run one"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one runs MLflow's migrations, seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cache", artifact_location=(root / "artifacts").as_uri())
    return uri, client, experiment


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVA_SP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _run(store, tmp_path, files=MODEL_FILES, finish=True) -> str:
    """A run that logged `files` under checkpoint/model (and a stage-1 style file under checkpoint)."""
    _, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    source = tmp_path / f"files-{run_id}"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    client.log_artifacts(run_id, str(source), "checkpoint/model")
    client.log_text(run_id, "stage 1", "checkpoint/projector.txt")
    if finish:
        client.set_terminated(run_id)
    return run_id


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


def test_a_finished_runs_artifact_is_downloaded_once_then_reused(store, tmp_path, home, caplog):
    uri, _, _ = store
    run_id = _run(store, tmp_path)
    caplog.set_level(logging.INFO, logger="pipelines.artifact_cache")
    first = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    assert _files(first) == MODEL_FILES
    assert first.parent == home / "cache" / "mlflow" / "runs" / run_id / "checkpoint" / "model"
    assert "downloaded" in caplog.text and str(first) in caplog.text
    inode = (first / "model.safetensors").stat().st_ino
    (first / "marker").write_text("still the first copy")
    caplog.clear()

    # mlflow:<run> as Serve and evaluate take it: the same folder, the same files, nothing downloaded.
    again = resolve_model_dir(f"mlflow:{run_id}", tracking_uri=uri)
    assert again == first
    assert (again / "marker").is_file() and (again / "model.safetensors").stat().st_ino == inode
    assert f"runs:/{run_id}/checkpoint/model: reused the cached copy {first}" in caplog.text
    assert "downloaded" not in caplog.text
    assert list(first.parent.iterdir()) == [first]
    assert not any((cache_root() / "partial").iterdir())

    # init_from=mlflow:<run> takes the whole checkpoint folder: an entry of its own beside checkpoint/model's.
    checkpoint = tracking.run_artifact_dir(uri, run_id, "checkpoint")
    assert checkpoint.parent == cache_root() / "runs" / run_id / "checkpoint"
    assert (checkpoint / "projector.txt").read_text() == "stage 1" and _files(checkpoint / "model") == MODEL_FILES
    assert tracking.run_artifact_dir(uri, run_id, "checkpoint") == checkpoint
    assert cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model") == first


def test_an_unfinished_run_is_never_cached_and_a_resumed_one_gets_a_new_copy(store, tmp_path, home, caplog):
    uri, client, _ = store
    run_id = _run(store, tmp_path, finish=False)
    caplog.set_level(logging.INFO, logger="pipelines.artifact_cache")
    first = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    second = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    assert first != second and _files(first) == _files(second) == MODEL_FILES
    assert first.is_relative_to(cache_root() / "unfinished") and second.is_relative_to(cache_root() / "unfinished")
    assert f"run {run_id} is RUNNING" in caplog.text and "not cached" in caplog.text
    assert not (cache_root() / "runs").exists()

    client.set_terminated(run_id, end_time=1_000)
    finished = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    assert finished.parent == cache_root() / "runs" / run_id / "checkpoint" / "model"
    assert cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model") == finished

    # Resumed, it logs new weights and finishes again: the old copy would be stale.
    client.update_run(run_id, status="RUNNING")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "model.safetensors").write_bytes(b"weights after resuming")
    client.log_artifacts(run_id, str(tmp_path / "new"), "checkpoint/model")
    client.set_terminated(run_id, end_time=2_000)
    resumed = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    assert resumed != finished and resumed.parent == finished.parent
    assert (resumed / "model.safetensors").read_bytes() == b"weights after resuming"
    assert (finished / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]


def test_a_model_alias_is_resolved_to_its_version_and_follows_the_alias_when_it_moves(store, tmp_path, home, caplog):
    uri, client, _ = store
    one = _run(store, tmp_path)
    two = _run(store, tmp_path, {**MODEL_FILES, "model.safetensors": b"weights of run two"})
    client.create_registered_model("tiny-alias")
    for run_id in (one, two):
        client.create_model_version("tiny-alias", f"runs:/{run_id}/checkpoint/model", run_id=run_id)
    client.set_registered_model_alias("tiny-alias", "champion", "1")
    caplog.set_level(logging.INFO, logger="pipelines.artifact_cache")

    champion = cached_artifacts(uri, "models:/tiny-alias@champion")
    assert champion.parent == home / "cache" / "mlflow" / "models" / "tiny-alias" / "1"
    assert (champion / "model.safetensors").read_bytes() == b"weights of run one"
    assert cached_artifacts(uri, "models:/tiny-alias/1") == champion
    assert "models:/tiny-alias/1: reused the cached copy" in caplog.text

    client.set_registered_model_alias("tiny-alias", "champion", "2")
    moved = cached_artifacts(uri, "models:/tiny-alias@champion")
    assert moved.parent == cache_root() / "models" / "tiny-alias" / "2"
    assert (moved / "model.safetensors").read_bytes() == b"weights of run two"
    assert cached_artifacts(uri, "models:/tiny-alias/latest") == moved
    assert resolve_model_dir("models:/tiny-alias/2", tracking_uri=uri) == moved
    assert (champion / "model.safetensors").read_bytes() == b"weights of run one"


def test_a_model_registered_again_under_the_same_version_is_not_served_from_the_old_copy(store, tmp_path, home):
    uri, client, _ = store
    one = _run(store, tmp_path)
    two = _run(store, tmp_path, {**MODEL_FILES, "model.safetensors": b"weights of run two"})
    client.create_registered_model("tiny-again")
    client.create_model_version("tiny-again", f"runs:/{one}/checkpoint/model", run_id=one)
    old = cached_artifacts(uri, "models:/tiny-again/1")
    client.delete_registered_model("tiny-again")
    client.create_registered_model("tiny-again")
    client.create_model_version("tiny-again", f"runs:/{two}/checkpoint/model", run_id=two)
    new = cached_artifacts(uri, "models:/tiny-again/1")
    assert new != old and new.parent == old.parent == cache_root() / "models" / "tiny-again" / "1"
    assert (new / "model.safetensors").read_bytes() == b"weights of run two"


def test_a_logged_model_is_cached_by_its_id_once_ready(store, tmp_path, home):
    uri, client, experiment = store
    model_id = client.create_logged_model(experiment).model_id
    (tmp_path / "logged").mkdir()
    (tmp_path / "logged" / "config.json").write_text("{}")
    client.log_model_artifacts(model_id, str(tmp_path / "logged"))
    pending = cached_artifacts(uri, f"models:/{model_id}")
    assert pending.is_relative_to(cache_root() / "unfinished") and (pending / "config.json").is_file()
    client.finalize_logged_model(model_id, "READY")
    ready = cached_artifacts(uri, f"models:/{model_id}")
    assert ready.parent == cache_root() / "logged" / model_id and (ready / "config.json").is_file()
    assert cached_artifacts(uri, f"models:/{model_id}") == ready


def test_a_killed_download_is_neither_taken_for_a_copy_nor_left_behind(store, tmp_path, home):
    uri, _, _ = store
    run_id = _run(store, tmp_path)
    partial = cache_root() / "partial"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    host = socket.gethostname()
    killed = partial / f"{host}-{int(dead.stdout)}-abc123" / "model"  # what a download killed half-way leaves
    running = partial / f"{host}-{os.getppid()}-def456" / "model"  # a live process's download, still going
    elsewhere = partial / f"other-host-{int(dead.stdout)}-ghi789" / "model"  # cannot be checked from here
    for folder in (killed, running, elsewhere):
        folder.mkdir(parents=True)
        (folder / "config.json").write_bytes(MODEL_FILES["config.json"])

    directory = cached_artifacts(uri, f"runs:/{run_id}/checkpoint/model")
    assert _files(directory) == MODEL_FILES
    assert sorted(path.name for path in partial.iterdir()) == sorted(
        [running.parent.name, elsewhere.parent.name])

    # A download that fails leaves neither an entry nor its staging folder.
    with pytest.raises(Exception, match="missing"):
        cached_artifacts(uri, f"runs:/{run_id}/checkpoint/missing")
    assert not (cache_root() / "runs" / run_id / "checkpoint" / "missing").exists()
    assert len(list(partial.iterdir())) == 2


def test_the_second_of_two_racing_downloads_keeps_the_first_ones_copy(tmp_path):
    winner, loser = tmp_path / "winner", tmp_path / "loser"
    for folder, weights in ((winner, b"first"), (loser, b"second")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    destination = tmp_path / "cache" / "runs" / "r" / "entry"
    assert artifact_cache._install(winner, destination) == destination
    assert artifact_cache._install(loser, destination) == destination
    assert (destination / "model.safetensors").read_bytes() == b"first"
    assert not winner.exists() and loser.is_dir()  # the loser's copy is left to its caller to delete


@pytest.mark.parametrize("uri", ["runs:/abc/../../elsewhere", "runs:/../x", "files:/abc"])
def test_a_source_that_would_leave_the_cache_is_refused(store, uri):
    with pytest.raises(ValueError):
        cached_artifacts(store[0], uri)

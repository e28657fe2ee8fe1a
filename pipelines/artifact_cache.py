"""The local cache of MLflow artifacts: a run's artifact or a registered model is downloaded once, then reused.

Layout under <home>/cache/mlflow/ (home: LLAVA_SP_HOME):
    runs/<run_id>/<artifact path>/<fingerprint>/     a finished run's artifact
    models/<name>/<version>/<fingerprint>/           a registered model version (an alias or "latest" is resolved
                                                     to its version first: an alias moves, a version does not)
    logged/<model id>/<fingerprint>/                 an MLflow 3 logged model (models:/m-<id>)
    partial/<host>-<pid>-<random>/                   downloads in progress
    unfinished/                                      uncached copies of runs that have not finished

<fingerprint> is a digest of everything that decides the content besides the key (a run's end time; a version's
source, run and creation time), so a stale copy is never reused: a run resumed and finished again, or a model deleted
and registered anew under the same name and version, gets a folder of its own. Its own child folder, not the key
folder itself, also lets the keys of a folder and of its subfolder (checkpoint, checkpoint/model) live side by side.

A download goes to partial/ first and is renamed into place when complete, so only a complete copy ever has an
entry's name: a killed download cannot pass for one, and of two jobs racing, the second keeps the first's copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """What a source URI stands for: where its copy is kept and what to download."""

    key: tuple[str, ...]  # folders under the cache root
    download_uri: str  # the artifact itself, e.g. the version an alias pointed to when resolved
    fingerprint: dict[str, str] | None  # what decides the content; None: not final yet, so never cached
    why_uncached: str = ""


def cache_root() -> Path:
    # Imported here: pipelines.defaults builds the tiny model (torch, transformers); this needs only its home.
    from pipelines.defaults import home

    return home() / "cache" / "mlflow"


def cached_artifacts(tracking_uri: str, uri: str) -> Path:
    """The local copy of a runs:/<run_id>/<path> or models:/ URI's artifact, downloaded on first use."""
    entry = resolve(MlflowClient(tracking_uri), uri)
    root = cache_root()
    if entry.fingerprint is None:
        return _download_uncached(entry, uri, tracking_uri, root)
    destination = root.joinpath(*entry.key, _digest(entry.fingerprint))
    if destination.exists():
        logger.info("%s: reused the cached copy %s (%s)", uri, destination, _describe(entry.fingerprint))
        return destination
    _remove_abandoned(root / "partial")
    staging = _staging(root / "partial")
    try:
        local = _download(entry.download_uri, tracking_uri, staging)
        result = _install(local, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: downloaded %s into the cache, %s (%s)", uri, entry.download_uri, result,
                _describe(entry.fingerprint))
    return result


def resolve(client: MlflowClient, uri: str) -> Entry:
    """The cache entry of a runs:/ or models:/ URI, looked up in the client's store."""
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].strip("/").partition("/")
        return run_entry(client, run_id, path)
    if uri.startswith("models:/"):
        return _model_entry(client, uri[len("models:/"):].strip("/"))
    raise ValueError(f"{uri}: only runs:/<run_id>/<path> and models:/ URIs are cached")


def run_entry(client: MlflowClient, run_id: str, path: str) -> Entry:
    """A run's artifact `path`. Only a FINISHED run's artifacts are final: a RUNNING run may still log more (and a
    run killed without being marked stays RUNNING), a FAILED one may have stopped in the middle of an upload. Its end
    time is in the fingerprint because a finished run can be resumed and log again."""
    path = _clean_path(path)
    key = ("runs", _segment(run_id), *(path.split("/") if path else ()))
    uri = f"runs:/{run_id}/{path}" if path else f"runs:/{run_id}"
    info = client.get_run(run_id).info
    if info.status != "FINISHED":
        return Entry(key, uri, None, f"run {run_id} is {info.status}, so its artifacts may still change")
    return Entry(key, uri, {"run_id": run_id, "path": path, "end_time": str(info.end_time)})


def _model_entry(client: MlflowClient, reference: str) -> Entry:
    """models:/<name>/<version|latest|stage>[/path], models:/<name>@<alias>[/path] or models:/<model id>."""
    head, _, rest = reference.partition("/")
    if "@" in head:
        name, alias = head.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
        path = rest
    elif not rest:
        return _logged_model_entry(client, head)
    else:
        name = head
        suffix, _, path = rest.partition("/")
        version = (client.get_model_version(name, suffix) if suffix.isdigit()
                   else _latest_version(client, name, None if suffix.lower() == "latest" else suffix))
    path = _clean_path(path)
    number = str(version.version)  # an int from some stores
    download_uri = client.get_model_version_download_uri(name, number).rstrip("/")
    key = ("models", _segment(name), number, *(path.split("/") if path else ()))
    if path:
        download_uri = f"{download_uri}/{path}"
    if version.status != "READY":
        return Entry(key, download_uri, None, f"model {name} version {number} is {version.status}")
    # The version's source cannot change, but the name and number are reused when a model is deleted and registered
    # again, or in another store: the source, run and creation time tell those apart.
    return Entry(key, download_uri, {"model": name, "version": number, "path": path,
                                     "source": version.source, "run_id": version.run_id or "",
                                     "created": str(version.creation_timestamp)})


def _logged_model_entry(client: MlflowClient, model_id: str) -> Entry:
    """An MLflow 3 logged model: its id is unique, its files final once it is READY."""
    model = client.get_logged_model(model_id)
    key = ("logged", _segment(model_id))
    if str(model.status) != "READY":
        return Entry(key, model.artifact_location, None, f"logged model {model_id} is {model.status}")
    return Entry(key, model.artifact_location, {"model_id": model_id, "created": str(model.creation_timestamp)})


def _latest_version(client: MlflowClient, name: str, stage: str | None):
    """The newest version of a registered model, or of those in `stage` (MLflow's models:/<name>/<stage>)."""
    # latest_versions holds the newest version of each stage, so the newest of those is the newest overall.
    versions = [version for version in client.get_registered_model(name).latest_versions or ()
                if stage is None or version.current_stage.lower() == stage.lower()]
    if not versions:
        raise ValueError(f"models:/{name}: no versions" + (f" in stage {stage}" if stage else ""))
    return max(versions, key=lambda version: int(version.version))


def _download(uri: str, tracking_uri: str, into: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri))


def _install(local: Path, destination: Path) -> Path:
    """Rename a complete download into place (one atomic step); where another job's copy got there first, use it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(local, destination)
    except OSError:
        if not destination.exists():
            raise
        logger.info("%s: another job cached it first; using that copy", destination)
    return destination


def _download_uncached(entry: Entry, uri: str, tracking_uri: str, root: Path) -> Path:
    """A copy of its own for each job: a folder under unfinished/, named in the warning for whoever deletes it."""
    (root / "unfinished").mkdir(parents=True, exist_ok=True)
    into = Path(tempfile.mkdtemp(prefix=f"{entry.key[1]}-", dir=root / "unfinished"))
    local = _download(entry.download_uri, tracking_uri, into)
    logger.warning("%s: not cached (%s); downloaded a copy of its own to %s, which nothing deletes", uri,
                   entry.why_uncached, into)
    return local


def _staging(partial: Path) -> Path:
    """A fresh folder for one download, named by host and process so that abandoned ones can be told apart."""
    partial.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{socket.gethostname()}-{os.getpid()}-", dir=partial))


def _remove_abandoned(partial: Path) -> None:
    """Delete the staging folders of this host's dead processes: downloads killed half-way, never to be finished.
    Another host's are left alone, since the cache may be on shared storage and its processes cannot be checked."""
    if not partial.is_dir():
        return
    host = socket.gethostname()
    for folder in partial.iterdir():
        owner, _, rest = folder.name.rpartition("-")[0].rpartition("-")
        if owner == host and rest.isdigit() and not _alive(int(rest)):
            logger.info("removing %s, the download of a process that no longer runs", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _digest(fingerprint: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def _describe(fingerprint: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in fingerprint.items())


def _clean_path(path: str) -> str:
    """An artifact path relative to its run or model, which cannot climb out of its folder in the cache."""
    path = posixpath.normpath(path.strip("/") or ".")
    if path == ".." or path.startswith("../"):
        raise ValueError(f"artifact path {path!r} leaves its run")
    return "" if path == "." else path


def _segment(name: str) -> str:
    """One folder name for a model name or id, however it is spelt ("a/b" is a%2Fb)."""
    quoted = urllib.parse.quote(name, safe="@+=,")
    if quoted in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a run id or model name")
    return quoted

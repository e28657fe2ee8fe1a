"""Data set names: `name=llava665k` at preprocessing, `data=llava665k` in training.

A data set's folder is named by the fingerprint of everything that decides its shards, which is what keeps shards
made with other settings from being reused; people name it. The catalog (CATALOG in the data folder) maps each
name to the folder its latest preprocessing wrote; preprocessing the same name with other settings moves the name
to the new folder, and a training run records the folder it read, so the name never hides which shards a run used.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

CATALOG = "catalog.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a name can never be mistaken for a path


def name_problem(name: str) -> str | None:
    if name and not NAME.match(name):
        return f"name={name!r} must be letters, digits, '.', '_' or '-' (starting with a letter or digit)"
    return None


def read_catalog(data_root: Path) -> dict[str, str]:
    path = data_root / CATALOG
    return json.loads(path.read_text()) if path.is_file() else {}


def register(data_root: Path, name: str, dataset_dir: Path) -> None:
    """Point `name` at dataset_dir (written atomically: a reader never sees half a catalog)."""
    catalog = read_catalog(data_root)
    previous = catalog.get(name)
    catalog[name] = str(dataset_dir)
    temporary = data_root / f".{CATALOG}.{uuid.uuid4().hex}"
    temporary.write_text(json.dumps(catalog, indent=1, sort_keys=True))
    temporary.replace(data_root / CATALOG)
    if previous and previous != str(dataset_dir):
        logger.info("data set %s now names %s (was %s)", name, dataset_dir, previous)


def resolve_data(data: str, data_root: Path) -> str:
    """A data set folder from `data`: a folder path as it is, or a name from the catalog in data_root."""
    if not data or "/" in data or Path(data).is_dir() or not NAME.match(data):
        return data
    catalog = read_catalog(data_root)
    if data not in catalog:
        known = ", ".join(sorted(catalog)) or "none yet"
        raise FileNotFoundError(f"data={data}: no such folder, and no data set of that name in {data_root / CATALOG} "
                                f"(names: {known}); preprocess it with name={data}, or give the data set's folder")
    logger.info("data set %s: %s", data, catalog[data])
    return catalog[data]

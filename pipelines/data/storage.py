"""Local paths and filesystem URIs (s3://, gs://, hdfs://, file://, or anything fsspec knows) behind one API."""

from __future__ import annotations

import functools
import os
import posixpath

import pyarrow.fs as pafs


class UnsafeImagePath(ValueError):
    """An image path that would leave the image root (absolute, '..', or a URI of its own)."""


@functools.lru_cache(maxsize=32)
def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI; cached per process, as workers resolve repeatedly."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception:  # pyarrow does not know the scheme: try fsspec, which knows many more
        import fsspec

        filesystem, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def open_input(uri: str):
    filesystem, path = resolve(uri)
    return filesystem.open_input_stream(path)


def safe_join(root: str, relative: str) -> str:
    """root + relative, refusing anything that would escape root."""
    if not isinstance(relative, str) or not relative.strip():
        raise UnsafeImagePath(f"image path {relative!r} is empty or not a string")
    if "://" in relative or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise UnsafeImagePath(f"image path {relative!r} is absolute; it must be relative to the image root")
    normalised = posixpath.normpath(relative.replace("\\", "/"))
    if normalised == ".." or normalised.startswith("../"):
        raise UnsafeImagePath(f"image path {relative!r} leaves the image root")
    return posixpath.join(root.rstrip("/"), normalised) if "://" in root else os.path.join(root, normalised)


def read_bytes(uri: str, limit: int) -> bytes:
    """At most limit + 1 bytes, so that an oversized file is detected without reading it all."""
    filesystem, path = resolve(uri)
    with filesystem.open_input_stream(path) as stream:
        return stream.read(limit + 1)


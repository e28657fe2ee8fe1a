"""Data set names: a name points at the folder its latest preprocessing wrote; anything else is a path."""

import pytest

from pipelines.data.catalog import name_problem, read_catalog, register, resolve_data


def test_a_name_resolves_to_its_latest_folder_and_paths_pass_through(tmp_path):
    first, second = tmp_path / "0123abcd", tmp_path / "4567ef01"
    first.mkdir()
    second.mkdir()
    register(tmp_path, "llava665k", first)
    assert resolve_data("llava665k", tmp_path) == str(first)
    register(tmp_path, "llava665k", second)  # preprocessed again with other settings: the name moves
    register(tmp_path, "mine", first)
    assert resolve_data("llava665k", tmp_path) == str(second)
    assert read_catalog(tmp_path) == {"llava665k": str(second), "mine": str(first)}
    assert resolve_data(str(first), tmp_path) == str(first) and resolve_data("", tmp_path) == ""
    with pytest.raises(FileNotFoundError, match="names: llava665k, mine"):
        resolve_data("llava558k", tmp_path)


def test_names_cannot_look_like_paths():
    assert name_problem("llava665k") is None and name_problem("my-set_v2.1") is None
    assert name_problem("../x") and name_problem("a/b") and name_problem(".hidden")

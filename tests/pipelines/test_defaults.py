"""The embedded defaults: sizes other than the default get folders of their own, and never overwrite another's."""

import json

import pytest

from pipelines.defaults import embedded_dataset, embedded_model_dir
from pipelines.synthetic import SyntheticConfig


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVA_SP_HOME", str(tmp_path))
    return tmp_path


def _image_size(directory) -> int:
    return json.loads((directory / "config.json").read_text())["vision_config"]["image_size"]


def test_model_options_name_the_folder_and_the_default_keeps_its_own(home):
    small = embedded_model_dir("cropping", image_size=112, sp_num_tokens=4, sp_dfi_kernel=4)
    assert small == home / "models" / "tiny-cropping-image_size112-sp_dfi_kernel4-sp_num_tokens4"
    default = embedded_model_dir("cropping")
    assert default == home / "models" / "tiny-cropping"
    assert (_image_size(small), _image_size(default)) == (112, 336)
    assert embedded_model_dir("cropping", sp_num_tokens=4, image_size=112, sp_dfi_kernel=4) == small  # any order


def test_a_non_default_data_set_lives_beside_the_default_one(home):
    config = SyntheticConfig(train_images=3, test_images=2)
    other = embedded_dataset(config)
    assert other.root == home / f"synthetic-{config.fingerprint()[:12]}"
    assert len(json.loads(other.pretrain_json.read_text())) == 3
    assert embedded_dataset(SyntheticConfig(train_images=3, test_images=2)).root == other.root

from dataclasses import asdict

import pytest
from transformers import CLIPVisionConfig

from sp_core import LlavaSPConfig, LlavaSPConfigError
from sp_core.config import spatial_schedule
from sp_core.sp_options import SP_OPTION_FIELDS, SPOptions


def test_paper_defaults_give_582_image_tokens():
    config = LlavaSPConfig()
    assert config.grid_size == 24
    assert config.spatial_channels == 512
    assert config.image_tokens_per_image == 582
    assert config.image_seq_length == 582
    assert config.dfi_grid_size == 5


def test_baseline_has_no_spatial_tokens():
    assert LlavaSPConfig(sp_variant="none").image_tokens_per_image == 576


@pytest.mark.parametrize("kernel, keys_per_side", [(16, 5), (12, 7), (8, 9), (4, 11)])
def test_dfi_kernels_of_the_paper(kernel, keys_per_side):
    assert LlavaSPConfig(sp_dfi_kernel=kernel).dfi_grid_size == keys_per_side


def test_cropping_schedule_is_centred_from_the_centre_outwards():
    schedule = spatial_schedule("cropping", 24, 6)
    assert schedule.view_sizes == tuple((side, side) for side in (4, 8, 12, 16, 20, 24))
    assert schedule.view_offsets == ((10, 10), (8, 8), (6, 6), (4, 4), (2, 2), (0, 0))


@pytest.mark.parametrize("tokens, sides", [(1, [24]), (3, [8, 16, 24]), (6, [4, 8, 12, 16, 20, 24]),
                                           (12, list(range(2, 25, 2)))])
def test_token_counts_of_tab4(tokens, sides):
    for variant in ("cropping", "pooling"):
        assert [h for h, _ in spatial_schedule(variant, 24, tokens).view_sizes] == sides


def test_schedule_follows_other_grid_sizes():
    vision = CLIPVisionConfig(image_size=224, patch_size=14)  # 16 x 16 grid
    config = LlavaSPConfig(vision_config=vision, sp_variant="cropping", sp_num_tokens=4, sp_dfi_kernel=8)
    assert [h for h, _ in config.spatial_schedule.view_sizes] == [4, 8, 12, 16]
    assert config.image_tokens_per_image == 4 + 256
    assert config.dfi_grid_size == 5


def test_sliding_window_tiles_the_grid_top_to_bottom_left_to_right():
    schedule = spatial_schedule("sliding_window", 24, 6)
    assert set(schedule.view_sizes) == {(12, 8)}
    assert schedule.view_offsets == ((0, 0), (0, 8), (0, 16), (12, 0), (12, 8), (12, 16))


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(sp_variant="bogus"), "sp_variant='bogus': Input should be 'none', 'cropping', 'pooling' or 'sliding_window'"),
        (dict(sp_extractor="mlp"), "sp_extractor='mlp': Input should be 'conv' or 'transformer'"),
        (dict(sp_variant="cropping", sp_num_tokens=8), "sp_num_tokens=8 is not possible for sp_variant='cropping'"),
        (dict(sp_num_tokens=5), "allowed: 1, 2, 3, 4, 6, 8, 12, 24"),
        (dict(sp_dfi_kernel=15), "sp_dfi_kernel=15 is not possible on a 24x24 grid"),
        (dict(sp_dfi_kernel=26), "sp_dfi_kernel=26"),
        (dict(vision_feature_select_strategy="full"), "allowed for a clip_vision_model tower: 'default'"),
        (dict(sp_extractor="transformer", sp_transformer_heads=7), "sp_transformer_heads=7 must divide"),
    ],
)
def test_impossible_combinations_fail_at_config_time(options, fragment):
    with pytest.raises(LlavaSPConfigError) as error:
        LlavaSPConfig(**options)
    assert fragment in str(error.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(LlavaSPConfigError) as error:
        LlavaSPConfig(sp_num_tokens=5, sp_dfi_kernel=13)
    assert "sp_num_tokens=5" in str(error.value) and "sp_dfi_kernel=13" in str(error.value)


def test_dfi_kernel_is_not_checked_without_dfi():
    assert LlavaSPConfig(sp_dfi=False, sp_dfi_kernel=13).image_tokens_per_image == 582


def test_config_round_trip(tmp_path):
    config = LlavaSPConfig(sp_variant="sliding_window", sp_num_tokens=3, sp_dfi=False, sp_channels=256)
    config.save_pretrained(tmp_path)
    loaded = LlavaSPConfig.from_pretrained(tmp_path)
    assert (loaded.sp_variant, loaded.sp_num_tokens, loaded.sp_dfi, loaded.sp_channels) == ("sliding_window", 3, False, 256)
    assert loaded.model_type == "llava_sp"


def test_a_saved_config_with_an_unknown_variant_fails_to_load(tmp_path):
    import json

    LlavaSPConfig().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["sp_variant"] = "zoom"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(LlavaSPConfigError, match="sp_variant='zoom'"):
        LlavaSPConfig.from_pretrained(tmp_path)


def test_the_sp_options_and_their_defaults_are_sp_options_own():
    """One source: LlavaSPConfig's sp_* options are SPOptions', with its defaults, and refuse what it refuses."""
    config = LlavaSPConfig()
    ours = {name for name in vars(config) if name.startswith("sp_")}
    assert ours == set(SP_OPTION_FIELDS)
    assert {name: getattr(config, name) for name in SP_OPTION_FIELDS} == asdict(SPOptions())
    with pytest.raises(LlavaSPConfigError, match=r"sp_transformer_layers=0: Input should be greater than or equal to 1"):
        LlavaSPConfig(sp_transformer_layers=0)

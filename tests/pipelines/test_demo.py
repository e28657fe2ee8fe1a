import pytest

from pipelines.config import ConfigError, load_config
from pipelines.demo_config import DemoConfig


def test_the_demo_refuses_unknown_variants_and_empty_runs():
    with pytest.raises(ConfigError) as error:
        load_config(DemoConfig, None, ["variants=[llava-2]"])
    assert "variants=['llava-2']; choose from ['llava-1.5', 'sp-cropping', 'sp-pooling']" in str(error.value)
    with pytest.raises(ConfigError, match="option 'finetune_steps' = 0: Input should be greater than 0"):
        load_config(DemoConfig, None, ["finetune_steps=0"])


def test_the_demo_models_fit_the_small_grid_and_only_sp_variants_get_sp_options():
    config = load_config(DemoConfig, None, [])
    assert config.model_options("none") == {"image_size": 112}
    assert config.model_options("cropping") == {"image_size": 112, "sp_num_tokens": 4, "sp_dfi_kernel": 4}
    with pytest.raises(ConfigError, match="option 'base_steps' = 0: Input should be greater than 0"):
        load_config(DemoConfig, None, ["base_steps=0"])

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.demo import DemoConfig


def test_the_demo_refuses_unknown_variants_and_empty_runs():
    with pytest.raises(ConfigError) as error:
        load_config(DemoConfig, None, ["variants=[llava-2]"])
    assert "variants=['llava-2']; choose from ['llava-1.5', 'sp-cropping', 'sp-pooling']" in str(error.value)
    with pytest.raises(ConfigError, match="finetune_steps=0 must be at least 1"):
        load_config(DemoConfig, None, ["finetune_steps=0"])

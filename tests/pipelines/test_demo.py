import numpy as np
import pytest

from pipelines.config import ConfigError, load_config
from pipelines.demo import DemoConfig
from pipelines.train.plan import make_plan


@pytest.mark.parametrize(("steps", "rows"), [(450, 444), (20, 400), (2000, 444), (7, 3)])
def test_max_steps_runs_as_many_epochs_as_it_takes(steps, rows):
    lengths = np.where(np.arange(rows) % 10 == 0, -50, 600)  # one text-only row in ten, as in the synthetic set
    plan = make_plan(lengths, 2, 2, 1, 1, 42, steps)
    assert plan.steps == steps  # one epoch of 444 rows is 111 steps: the demo's 450-step stage 2 once stopped there


def test_the_demo_refuses_unknown_variants_and_empty_runs():
    with pytest.raises(ConfigError) as error:
        load_config(DemoConfig, None, ["variants=[llava-2]"])
    assert "variants=['llava-2']; choose from ['llava-1.5', 'sp-cropping', 'sp-pooling']" in str(error.value)
    with pytest.raises(ConfigError, match="finetune_steps=0 must be at least 1"):
        load_config(DemoConfig, None, ["finetune_steps=0"])

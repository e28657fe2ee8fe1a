import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.config import ConfigError, flatten, load_config
from pipelines.data.preprocess import PreprocessConfig
from pipelines.evaluate.config import EvaluateConfig
from pipelines.serve.config import ServeConfig
from pipelines.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
# The job each YAML names in its first line -> the schema it binds to.
SCHEMAS = {"jobs/preprocess.py": PreprocessConfig, "jobs/pretrain.py": TrainConfig, "jobs/finetune.py": TrainConfig,
           "jobs/serve.py": ServeConfig, "jobs/evaluate.py": EvaluateConfig}


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Outer:
    name: str = "x"
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None
    flag: bool = False


def test_overrides_parse_as_yaml_values(tmp_path):
    (tmp_path / "c.yaml").write_text("name: base\ninner:\n  steps: 3\n")
    config = load_config(Outer, tmp_path / "c.yaml", ["inner.lr=2e-5", "tags=[a, b]", "limit=7", "flag=true"])
    assert config == Outer(name="base", tags=["a", "b"], inner=Inner(lr=2e-5, steps=3), limit=7, flag=True)
    assert load_config(Outer, None, ["tags=single", "limit=null", "name=12"]) == Outer(name="12", tags=["single"])
    assert flatten(config)["inner.lr"] == 2e-5


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        load_config(Outer, None, ["inner.steps=many", "colour=red", "flag=maybe", "noequals", "inner.lr=true"])
    message = str(error.value)
    for fragment in ("'inner.steps' must be int, got 'many'", "unknown option 'colour'", "'flag' must be bool",
                     "'noequals' is not key=value", "'inner.lr' must be float"):
        assert fragment in message


def test_schema_validation_runs_alongside_unknown_keys():
    with pytest.raises(ConfigError) as error:
        load_config(PreprocessConfig, None, ["template=llava_v0", "bogus=1"])
    assert "unknown option 'bogus'" in str(error.value) and "template='llava_v0'" in str(error.value)


@pytest.mark.parametrize("path", sorted((ROOT / "infra" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_config_binds_to_the_schema_of_the_job_it_names(path):
    first_line = path.read_text().splitlines()[0]
    match = re.match(r"# python (jobs/\w+\.py) --config (\S+)", first_line)
    assert match, f"{path.name}: the first line must be the command that runs it"
    assert match.group(2) == f"infra/configs/{path.name}"
    load_config(SCHEMAS[match.group(1)], path)


def test_train_config_refuses_what_it_cannot_do_before_any_worker_starts():
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, None, ["zero_stage=1", "stage=pretrain", "init_from=x", "precision=fp8", "lr=0",
                                          "placement_strategy=spread"])
    message = str(error.value)
    for fragment in ("zero_stage=1; allowed: 2, 3", "init_from / full_finetune are finetune options",
                     "precision='fp8'; allowed: auto, bf16, fp16, fp32", "lr=0.0 must be positive",
                     "placement_strategy='spread'; allowed: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"):
        assert fragment in message
    assert load_config(TrainConfig, None, ["zero_stage=3"]).zero_stage == 3  # ZeRO-3 is selectable


def test_the_whole_llm_is_trained_by_pretrain_llm_in_stage1_and_full_finetune_in_stage2_only():
    with pytest.raises(ConfigError, match="pretrain_llm is a pretrain option; stage=finetune trains the whole LLM "
                                          "with full_finetune=true"):
        load_config(TrainConfig, None, ["stage=finetune", "pretrain_llm=true"])
    with pytest.raises(ConfigError, match="init_from / full_finetune are finetune options"):
        load_config(TrainConfig, None, ["stage=pretrain", "full_finetune=true"])
    trains = {(stage, flag): TrainConfig(stage=stage, **{flag: True}).trains_llm
              for stage, flag in (("pretrain", "pretrain_llm"), ("finetune", "full_finetune"))}
    assert trains == {("pretrain", "pretrain_llm"): True, ("finetune", "full_finetune"): True}
    assert not TrainConfig(stage="pretrain").trains_llm and not TrainConfig(stage="finetune").trains_llm

import re
from dataclasses import field
from pathlib import Path
from typing import Literal, get_args

import pytest
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS, ConfigError, StrList, flatten, load_config
from pipelines.data.config import PreprocessConfig, TemplateName
from pipelines.evaluate.config import EvaluateConfig
from pipelines.serve.config import ServeConfig
from pipelines.train.config import TrainConfig
from sp_core.conversation import TEMPLATES

ROOT = Path(__file__).resolve().parents[2]
# The job each YAML names in its first line -> the schema it binds to.
SCHEMAS = {"jobs/preprocess.py": PreprocessConfig, "jobs/pretrain.py": TrainConfig, "jobs/finetune.py": TrainConfig,
           "jobs/serve.py": ServeConfig, "jobs/evaluate.py": EvaluateConfig}


@dataclass(config=OPTIONS)
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass(config=OPTIONS)
class Item:
    name: str = "a"
    size: int = 1


@dataclass(config=OPTIONS)
class Outer:
    name: str = "x"
    tags: StrList = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    items: list[Item] = field(default_factory=lambda: [Item(), Item(name="b")])
    limit: int | None = None
    flag: bool = False
    mode: Literal["fast", "exact"] = "fast"

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit={self.limit} must be >= 0")


def test_overrides_parse_as_yaml_values(tmp_path):
    (tmp_path / "c.yaml").write_text("name: base\ninner:\n  steps: 3\n")
    config = load_config(Outer, tmp_path / "c.yaml", ["inner.lr=2e-5", "tags=[a, b]", "limit=7", "flag=true"])
    assert config == Outer(name="base", tags=["a", "b"], inner=Inner(lr=2e-5, steps=3), limit=7, flag=True)
    assert load_config(Outer, None, ["tags=single", "limit=null", "name=12"]) == Outer(name="12", tags=["single"])
    assert flatten(config)["inner.lr"] == 2e-5


def test_a_lists_items_are_addressed_by_index_starting_from_the_default_list(tmp_path):
    config = load_config(Outer, None, ["items.1.size=5", "items.0.name=first"])
    assert config.items == [Item(name="first"), Item(name="b", size=5)]
    (tmp_path / "c.yaml").write_text("items: [{name: only}]\n")
    assert load_config(Outer, tmp_path / "c.yaml", ["items.0.size=2"]).items == [Item(name="only", size=2)]
    with pytest.raises(ConfigError, match=r"items.2.size: items has 2 items, no item '2'"):
        load_config(Outer, None, ["items.2.size=1"])


def test_every_problem_is_reported_at_once_naming_the_option_and_the_value():
    with pytest.raises(ConfigError) as error:
        load_config(Outer, None, ["inner.steps=many", "colour=red", "flag=maybe", "noequals", "inner.lr=fast",
                                  "mode=slow", "items.0.colour=red"])
    message = str(error.value)
    for fragment in ("option 'inner.steps' = 'many': Input should be a valid integer",
                     "unknown option 'colour'; allowed: name, tags, inner, items, limit, flag, mode",
                     "option 'flag' = 'maybe': Input should be a valid boolean", "'noequals' is not key=value",
                     "option 'inner.lr' = 'fast': Input should be a valid number",
                     "option 'mode' = 'slow': Input should be 'fast' or 'exact'",
                     "unknown option 'items.0.colour'; allowed: name, size"):
        assert fragment in message, message


def test_a_value_or_file_that_is_not_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'items=\[\{name: a': the value is not valid YAML"):
        load_config(Outer, None, ["items=[{name: a"])
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(Outer, tmp_path / "bad.yaml")


def test_a_schemas_own_check_reports_in_its_words():
    with pytest.raises(ConfigError, match="limit=-1 must be >= 0"):
        load_config(Outer, None, ["limit=-1"])


def test_allowed_values_and_unknown_keys_are_reported_together():
    with pytest.raises(ConfigError) as error:
        load_config(PreprocessConfig, None, ["template=llava_v0", "bogus=1"])
    assert "unknown option 'bogus'" in str(error.value)
    assert "option 'template' = 'llava_v0': Input should be 'plain' or 'vicuna_v1'" in str(error.value)


def test_the_config_templates_are_sp_cores_templates():
    assert set(get_args(TemplateName)) == set(TEMPLATES)


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
    for fragment in ("option 'zero_stage' = 1: Input should be 2 or 3",
                     "option 'precision' = 'fp8': Input should be 'auto', 'bf16', 'fp16' or 'fp32'",
                     "option 'placement_strategy' = 'spread': Input should be 'PACK', 'SPREAD', 'STRICT_PACK' or "
                     "'STRICT_SPREAD'"):
        assert fragment in message, message
    with pytest.raises(ConfigError) as error:  # the schema's own checks, once every value has its type
        load_config(TrainConfig, None, ["stage=pretrain", "init_from=x"])
    assert "init_from / full_finetune are finetune options" in str(error.value)
    with pytest.raises(ConfigError, match="option 'lr' = 0: Input should be greater than 0"):
        load_config(TrainConfig, None, ["lr=0"])
    with pytest.raises(ConfigError, match="variant='crop': the embedded tiny model is one of none, cropping, pooling"):
        load_config(TrainConfig, None, ["variant=crop"])
    assert load_config(TrainConfig, None, ["model=/models/mine", "variant=tab4-tokens-1"]).variant == "tab4-tokens-1"
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

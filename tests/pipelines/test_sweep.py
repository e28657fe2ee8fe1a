"""The ablation sweep: every paper row is a valid config, and a sweep nests its runs and logs the comparison."""

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines.config import ConfigError, load_config
from pipelines.sweep import _comparison
from pipelines.sweep_config import ABLATIONS_DIR, SweepConfig, load_row
from sp_core.tiny import build_tiny_tokenizer, tiny_config

ROWS = sorted(path.stem for path in ABLATIONS_DIR.glob("*.yaml"))


def test_every_row_of_tables_3_to_6_is_there():
    expected = {"tab3-conv", "tab3-transformer", "tab4-tokens-1", "tab4-tokens-3", "tab4-tokens-6", "tab4-tokens-12",
                "tab5-sliding-window", "tab5-cropping", "tab5-pooling", "tab6-baseline", "tab6-sfe-cropping",
                "tab6-sfe-pooling", "tab6-dfi-cropping-k16", "tab6-dfi-cropping-k12", "tab6-dfi-cropping-k8",
                "tab6-dfi-cropping-k4", "tab6-dfi-pooling-k16"}
    assert set(ROWS) == expected


@pytest.mark.parametrize("name", ROWS)
def test_each_row_binds_and_makes_a_valid_model_config(name):
    path = ABLATIONS_DIR / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == f"# python jobs/sweep.py rows=[{name}]"
    row = load_row(name)
    assert row.name == name and row.table.startswith("Tab. ") and row.row
    config = tiny_config(build_tiny_tokenizer(), **row.model_options())  # validates the projector options
    tokens = {"tab4-tokens-1": 1, "tab4-tokens-3": 3, "tab4-tokens-12": 12, "tab6-baseline": 0}.get(name, 6)
    assert config.num_spatial_tokens == tokens
    if name.startswith("tab6-dfi"):
        assert config.sp_dfi and config.sp_dfi_kernel == int(name.rsplit("k", 1)[1])


def test_unknown_rows_and_half_real_weights_are_refused_up_front():
    with pytest.raises(ConfigError) as error:
        load_config(SweepConfig, None, ["rows=[tab9-magic]", "base_llm=lmsys/vicuna-7b-v1.5"])
    message = str(error.value)
    assert "rows ['tab9-magic'] unknown; available: tab3-conv" in message
    assert "base_llm and vision_tower go together" in message
    with pytest.raises(ConfigError, match="option 'pretrain_steps' = 0: Input should be greater than 0"):
        load_config(SweepConfig, None, ["pretrain_steps=0"])


def test_the_comparison_groups_rows_by_table_in_paper_order():
    rows = [load_row(name) for name in ("tab6-dfi-cropping-k16", "tab4-tokens-3", "tab6-baseline")]
    results = {row.name: {"pretrain_loss": 5.0, "finetune_loss": 4.0, "projector_parameters": 1234,
                          "accuracy": 0.5, "colour/accuracy": 0.75} for row in rows}
    header, lines = _comparison(rows, results)
    assert header[:3] == ["table", "row", "spatial tokens"] and header[-1] == "colour"
    assert [line[:3] for line in lines] == [["Tab. 4", "3 tokens (sides 8, 16, 24)", "3"],
                                            ["Tab. 6", "+SFE+DFI cropping 5x5 / 16x16 (LLaVA-SP-Cropping)", "6"],
                                            ["Tab. 6", "LLaVA-1.5 (no SFE, no DFI)", "0"]]
    assert lines[0][3:] == ["1,234", "5.000", "4.000", "0.500", "0.750"]


@pytest.mark.integration
def test_a_sweep_trains_evaluates_and_nests_its_runs(ray_session, environment):
    from pipelines.sweep import run_sweep

    result = run_sweep(SweepConfig(rows=["tab4-tokens-1"], pretrain_steps=2, finetune_steps=2, num_workers=1,
                                   eval_questions=4, experiment="sweep-test"))
    client = MlflowClient(result.tracking_uri)
    variant = client.get_run(result.variant_run_ids["tab4-tokens-1"])
    assert variant.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert variant.data.params["sp_num_tokens"] == "1" and variant.data.metrics["questions"] == 4
    children = client.search_runs([variant.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{variant.info.run_id}'")
    assert sorted(run.info.run_name for run in children) == ["evaluate-tab4-tokens-1", "finetune-tab4-tokens-1",
                                                             "pretrain-tab4-tokens-1"]
    table = Path(client.download_artifacts(result.parent_run_id, "ablations.csv")).read_text().splitlines()
    assert table[0].startswith("table,row,spatial tokens,projector params") and table[1].startswith(
        "Tab. 4,1 token (side 24),1,")
    # Rows share the embedded baseline's vision tower and LLM, so that only the projector differs between them.
    from safetensors.torch import load_file

    from pipelines.defaults import embedded_model_dir, home

    row_weights = load_file(home() / "sweep" / "models" / "tab4-tokens-1" / "model.safetensors")
    baseline = load_file(embedded_model_dir("none") / "model.safetensors")
    shared = [key for key in baseline if "multi_modal_projector" not in key]
    assert len(shared) > 20 and all(torch.equal(row_weights[key], baseline[key]) for key in shared)

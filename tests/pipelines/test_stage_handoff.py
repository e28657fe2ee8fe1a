"""What stage 1 hands to stage 2 when it trained the whole LLM (pretrain_llm), without Ray: the same functions the
training workers call, on a plain model."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines.train.checkpoint import save_trained_weights
from pipelines.train.config import TrainConfig
from pipelines.train.model_setup import LANGUAGE_MODEL_WEIGHTS, build_stage_model
from sp_core.checkpoint_check import LlavaSPCheckpointError


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name.split(".")[0] if name.startswith("lm_head") else ".".join(name.split(".")[:2])
            for name, parameter in model.named_parameters() if parameter.requires_grad}


def _scramble(model: torch.nn.Module, seed: int) -> None:
    """Stand-in for training: new values in every trainable parameter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


def test_pretrain_llm_trains_the_llm_and_projector_and_stage2_starts_from_both(tiny_model_dir, tmp_path):
    stage1 = build_stage_model(TrainConfig(stage="pretrain", pretrain_llm=True), str(tiny_model_dir), None, "fp32")
    assert _trainable(stage1) == {"model.language_model", "model.multi_modal_projector", "lm_head"}
    assert _trainable(build_stage_model(TrainConfig(stage="pretrain"), str(tiny_model_dir), None, "fp32")) == {
        "model.multi_modal_projector"}
    _scramble(stage1, seed=1)
    save_trained_weights(stage1, tmp_path, trains_llm=True)
    saved = load_file(tmp_path / LANGUAGE_MODEL_WEIGHTS)
    assert "lm_head.weight" in saved and any(name.startswith("model.language_model.") for name in saved)
    assert not any("vision_tower" in name or "projector" in name for name in saved)

    full = TrainConfig(stage="finetune", full_finetune=True)
    stage2 = build_stage_model(full, str(tiny_model_dir), tmp_path, "fp32")
    base = build_stage_model(full, str(tiny_model_dir), None, "fp32")
    for name, tensor in stage2.state_dict().items():
        if "vision_tower" in name:
            assert torch.equal(tensor, base.state_dict()[name]), name  # never trained
        else:
            assert torch.equal(tensor, stage1.state_dict()[name]), name  # LLM, head and projector of stage 1


def test_a_projector_only_stage1_leaves_the_base_llm_to_stage2(tiny_model_dir, tmp_path):
    stage1 = build_stage_model(TrainConfig(stage="pretrain"), str(tiny_model_dir), None, "fp32")
    _scramble(stage1, seed=2)
    save_trained_weights(stage1, tmp_path, trains_llm=False)
    assert not (tmp_path / LANGUAGE_MODEL_WEIGHTS).exists()
    full = TrainConfig(stage="finetune", full_finetune=True)
    stage2 = build_stage_model(full, str(tiny_model_dir), tmp_path, "fp32")
    base = build_stage_model(full, str(tiny_model_dir), None, "fp32")
    assert torch.equal(stage2.lm_head.weight, base.lm_head.weight)
    assert torch.equal(stage2.projector.linear_1.weight, stage1.projector.linear_1.weight)


def test_a_stage1_llm_of_another_shape_is_refused_naming_the_file_and_keys(tiny_model_dir, tmp_path):
    stage1 = build_stage_model(TrainConfig(stage="pretrain", pretrain_llm=True), str(tiny_model_dir), None, "fp32")
    save_trained_weights(stage1, tmp_path, trains_llm=True)
    state = load_file(tmp_path / LANGUAGE_MODEL_WEIGHTS)
    head = state.pop("lm_head.weight")
    save_file(state, tmp_path / LANGUAGE_MODEL_WEIGHTS)
    with pytest.raises(LlavaSPCheckpointError, match=r"language_model.safetensors does not fit the model exactly:\n"
                                                     r"  - missing from the checkpoint: 1 key\(s\): lm_head.weight$"):
        build_stage_model(TrainConfig(stage="finetune", full_finetune=True), str(tiny_model_dir), tmp_path, "fp32")
    save_file({**state, "lm_head.weight": head[:, :32].contiguous()}, tmp_path / LANGUAGE_MODEL_WEIGHTS)
    with pytest.raises(LlavaSPCheckpointError,
                       match=r"lm_head.weight has shape \(\d+, 32\) in the checkpoint, \(\d+, 64\) in the model"):
        build_stage_model(TrainConfig(stage="finetune", full_finetune=True), str(tiny_model_dir), tmp_path, "fp32")


def test_a_stage1_projector_of_another_variant_is_refused_naming_the_keys(tiny_model_dir, tmp_path):
    """init_from a pooling stage 1 into the cropping+DFI model: the DFI keys are missing, nothing is left random."""
    from sp_core.tiny import save_tiny_model

    pooling_dir = save_tiny_model(tmp_path / "pooling", seed=0, sp_variant="pooling", sp_dfi=False)
    stage1 = build_stage_model(TrainConfig(stage="pretrain"), str(pooling_dir), None, "fp32")
    (tmp_path / "stage1").mkdir()
    save_trained_weights(stage1, tmp_path / "stage1", trains_llm=False)
    with pytest.raises(LlavaSPCheckpointError, match=r"projector.safetensors does not fit the model exactly:\n"
                                                     r"  - missing from the checkpoint: \d+ key\(s\): detail_integrator"):
        build_stage_model(TrainConfig(stage="finetune"), str(tiny_model_dir), tmp_path / "stage1", "fp32")

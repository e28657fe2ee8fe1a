import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import CLIPVisionModel, LlamaForCausalLM

from pipelines.commands.convert import main
from sp_core.convert import (
    OfficialCheckpointError,
    detect_official_variant,
    projector_from_official,
    strip_official_prefix,
)
from sp_core.loading import load_llava_sp
from sp_core.tiny import tiny_config
from tests.sp_core.official_reference import (
    official_projector_forward,
    official_state_dict,
)
from tests.sp_core.serving_answers import assert_serves_like_generate

SMALL = dict(vision_width=32, spatial_width=16, text_width=64)


def _unprefixed(state):
    return {strip_official_prefix(k): v for k, v in state.items()}


@pytest.mark.parametrize(
    "variant, dfi, bias, expected",
    [
        ("cropping", True, True, ("cropping", 6, True, 16, True)),
        ("pooling", True, False, ("pooling", 6, True, 16, False)),
        ("cropping", False, False, ("cropping", 6, False, 16, False)),
        ("pooling", False, False, ("pooling", 6, False, 16, False)),
    ],
)
def test_detects_the_official_variant_from_keys_and_shapes(variant, dfi, bias, expected):
    detected = detect_official_variant(_unprefixed(official_state_dict(variant, dfi=dfi, spatial_bias=bias, **SMALL)))
    assert (detected.sp_variant, detected.sp_num_tokens, detected.sp_dfi, detected.sp_dfi_kernel,
            detected.sp_projector_bias) == expected
    assert (detected.vision_width, detected.spatial_channels, detected.text_width, detected.grid_size) == (32, 16, 64, 24)


@pytest.mark.parametrize("kernel", [12, 8, 4])
def test_detects_the_dfi_kernel(kernel):
    state = official_state_dict("cropping", dfi=True, dfi_kernel=kernel, **SMALL)
    assert detect_official_variant(_unprefixed(state)).sp_dfi_kernel == kernel
    features = torch.randn(1, 576, 32)
    keys = {5: 9, 12: 49, 8: 81, 4: 121}
    with torch.no_grad():
        assert projector_from_official(state).project(features).detail_attention.shape == (1, 6, keys[kernel])


@pytest.mark.parametrize("prefix", ["", "model.", "base_model.model.model."])
def test_accepts_keys_with_or_without_the_lora_prefix(prefix):
    state = official_state_dict("pooling", dfi=True, prefix=prefix, seed=2, **SMALL)
    features = torch.randn(2, 576, 32)
    with torch.no_grad():
        ours = projector_from_official(state)(features)
        reference = official_projector_forward(_unprefixed(state), features, "pooling", dfi=True)
    assert ours.shape == (2, 582, 64)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_a_missing_key_is_named():
    state = official_state_dict("cropping", dfi=True, spatial_bias=True, **SMALL)
    del state["model.value_projector.1.bias"]
    with pytest.raises(OfficialCheckpointError, match=r"missing key 'value_projector.1.bias'"):
        projector_from_official(state)
    state = official_state_dict("cropping", **SMALL)
    del state["model.conv_12.weight"]
    with pytest.raises(OfficialCheckpointError, match=r"conv_12"):
        projector_from_official(state)


def test_an_unexpected_key_is_named():
    state = official_state_dict("pooling", **SMALL)
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 4)
    with pytest.raises(OfficialCheckpointError, match=r"unexpected key 'layers.0.self_attn.q_proj.weight'"):
        projector_from_official(state)
    state = official_state_dict("pooling", **SMALL)
    state["model.tfm_4.encoder.layers.0.linear1.weight"] = torch.zeros(4, 4)
    with pytest.raises(OfficialCheckpointError, match="tfm_4"):
        projector_from_official(state)


def test_a_wrong_shape_is_named():
    state = official_state_dict("cropping", dfi=True, **SMALL)
    state["model.conv_CM.weight"] = torch.zeros(16, 32, 3, 3)
    with pytest.raises(OfficialCheckpointError):
        projector_from_official(state)
    state = official_state_dict("cropping", **SMALL)
    state["model.conv_linear.1.weight"] = torch.zeros(64, 17)
    with pytest.raises(OfficialCheckpointError, match=r"'conv_linear.1.weight' has shape \(64, 17\), expected \(64, 16\)"):
        projector_from_official(state)


def test_mixed_crop_and_pool_keys_are_rejected():
    state = official_state_dict("pooling", **SMALL)
    state["model.conv_4.weight"] = state.pop("model.conv_4.1.weight")
    with pytest.raises(OfficialCheckpointError, match="mix pooled keys"):
        projector_from_official(state)


def test_plain_llava_projector_is_the_baseline():
    state = {k: v for k, v in official_state_dict("pooling", **SMALL).items() if "mm_projector" in k}
    features = torch.randn(1, 576, 32)
    with torch.no_grad():
        assert projector_from_official(state)(features).shape == (1, 576, 64)


def _official_lora_checkpoint(tmp_path, tokenizer):
    """The layout the official training writes: adapter over LlavaLlamaForCausalLM (a LlamaForCausalLM) and
    non_lora_trainables.bin with `base_model.model.model.` keys; plus the base LLM and CLIP tower dirs."""
    config = tiny_config(tokenizer, sp_variant="cropping")
    torch.manual_seed(0)
    llm = LlamaForCausalLM(config.text_config)
    llm.save_pretrained(tmp_path / "vicuna")
    tokenizer.save_pretrained(tmp_path / "vicuna")
    CLIPVisionModel(config.vision_config).save_pretrained(tmp_path / "clip")

    checkpoint = tmp_path / "llava-sp-cropping-lora"
    lora = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                               "gate_proj", "up_proj", "down_proj"]))
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.2)
    lora.save_pretrained(checkpoint)
    expected_llm = lora.merge_and_unload()
    trainables = official_state_dict("cropping", dfi=True, spatial_bias=True, prefix="base_model.model.model.",
                                     seed=7, **SMALL)
    torch.save(trainables, checkpoint / "non_lora_trainables.bin")  # the official format is a torch pickle
    (checkpoint / "config.json").write_text(json.dumps({"mm_vision_select_layer": -2, "image_aspect_ratio": "pad"}))
    return checkpoint, expected_llm, trainables


def test_cli_converts_a_whole_official_lora_checkpoint(tmp_path, tiny_tokenizer, capsys):
    checkpoint, expected_llm, trainables = _official_lora_checkpoint(tmp_path, tiny_tokenizer)
    out = tmp_path / "converted"
    code = main([f"checkpoint={checkpoint}", f"base_llm={tmp_path / 'vicuna'}", f"vision_tower={tmp_path / 'clip'}",
                 f"out={out}", "dtype=float32"])
    assert code == 0, capsys.readouterr().err
    assert not list(out.glob("*.bin"))

    model, processor = load_llava_sp(out)
    assert (model.config.sp_variant, model.config.sp_dfi, model.config.sp_projector_bias) == ("cropping", True, True)
    text = tiny_tokenizer("USER: How many shapes? ASSISTANT:", return_tensors="pt")
    with torch.no_grad():  # the merged LoRA language model is the one the official loader would build
        torch.testing.assert_close(model(**text).logits, expected_llm(**text).logits, atol=1e-5, rtol=1e-5)
        features = torch.randn(1, 576, 32)
        reference = official_projector_forward(_unprefixed(trainables), features, "cropping", dfi=True)
        torch.testing.assert_close(model.projector(features), reference, atol=1e-5, rtol=1e-5)
    clip = CLIPVisionModel.from_pretrained(tmp_path / "clip")
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight,
                       clip.embeddings.patch_embedding.weight)
    from PIL import Image

    inputs = processor(images=Image.new("RGB", (64, 48), "red"), text="USER: <image>\nWhat? ASSISTANT:", return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=3, min_new_tokens=3).shape[1] == inputs.input_ids.shape[1] + 3
    assert_serves_like_generate(out, model, Image.new("RGB", (64, 48), "red"))


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, tiny_tokenizer, capsys):
    checkpoint, _, trainables = _official_lora_checkpoint(tmp_path, tiny_tokenizer)
    del trainables["base_model.model.model.conv_CM.weight"]
    torch.save(trainables, checkpoint / "non_lora_trainables.bin")
    code = main([f"checkpoint={checkpoint}", f"base_llm={tmp_path / 'vicuna'}", f"vision_tower={tmp_path / 'clip'}",
                 f"out={tmp_path / 'out'}"])
    assert code == 2
    assert "missing key 'conv_CM.weight'" in capsys.readouterr().err
    assert main([f"checkpoint={tmp_path / 'nowhere'}", "base_llm=x", "vision_tower=y", f"out={tmp_path / 'o'}"]) == 2


@pytest.mark.parametrize("variant", ["pooling", "cropping"])
def test_an_extra_conv_off_the_schedule_is_named_as_unexpected(variant):
    state = official_state_dict(variant, dfi=True, **SMALL)
    state["model.conv_99.weight"] = torch.zeros(16, 32, 3, 3)
    with pytest.raises(OfficialCheckpointError, match=rf"unexpected key 'conv_99.weight' for a {variant} SFE \(6 tokens\)"):
        projector_from_official(state)

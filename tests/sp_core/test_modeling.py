import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from sp_core import LlavaSPForConditionalGeneration, LlavaSPInputError
from sp_core.checkpoint_check import LlavaSPCheckpointError
from sp_core.loading import load_llava_sp
from sp_core.lora_targets import LANGUAGE_MODEL_LORA_TARGETS
from sp_core.tiny import build_tiny_model

PROMPT = "USER: <image>\nWhat colour is the shape? ASSISTANT:"


def _image(seed: int = 0, size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_llava_sp(tiny_model_dir)


def test_round_trip_gives_identical_logits(tiny_model_dir, loaded):
    model, processor = loaded
    rebuilt, _ = build_tiny_model(seed=0, sp_variant="cropping")
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, rebuilt(**inputs).logits)
    assert sorted(p.name for p in tiny_model_dir.iterdir() if "model" in p.name) == ["model.safetensors"]


def test_auto_class_resolves_to_llava_sp(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlavaSPForConditionalGeneration)
    assert model.config.sp_variant == "cropping" and model.config.image_tokens_per_image == 582


def test_processor_expands_image_to_582_placeholders(loaded):
    model, processor = loaded
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == 582
    assert inputs.pixel_values.shape == (1, 3, 336, 336)


def test_generate_with_an_image(loaded):
    model, processor = loaded
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    first = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6)
    again = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6)
    new_tokens = first[0, inputs.input_ids.shape[1]:]
    assert new_tokens.numel() == 6
    assert torch.equal(first, again)  # greedy by default
    assert model.config.image_token_id not in new_tokens.tolist()
    # The image matters: another image changes the first-step logits.
    other = processor(images=_image(seed=9), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits[0, -1], model(**other).logits[0, -1])


def test_batch_mixing_image_and_text_only_samples(loaded):
    model, processor = loaded
    tokenizer = processor.tokenizer
    with_image = processor(images=_image(), text=PROMPT, return_tensors="pt")
    text_only = tokenizer("USER: How many shapes are there? ASSISTANT:", return_tensors="pt")
    length = with_image.input_ids.shape[1]
    padded = torch.full((1, length), tokenizer.pad_token_id)
    padded[0, : text_only.input_ids.shape[1]] = text_only.input_ids[0]
    mask = torch.zeros((1, length), dtype=torch.long)
    mask[0, : text_only.input_ids.shape[1]] = 1
    batch_ids = torch.cat([with_image.input_ids, padded])
    batch_mask = torch.cat([with_image.attention_mask, mask])
    with torch.no_grad():
        batch = model(input_ids=batch_ids, attention_mask=batch_mask, pixel_values=with_image.pixel_values).logits
        alone_image = model(**with_image).logits
        alone_text = model(**text_only).logits
    torch.testing.assert_close(batch[0], alone_image[0], atol=1e-5, rtol=1e-5)
    n = text_only.input_ids.shape[1]
    torch.testing.assert_close(batch[1, :n], alone_text[0], atol=1e-5, rtol=1e-5)


def test_lora_on_the_language_model_only_and_it_still_generates(loaded, tmp_path):
    model, processor = loaded
    model, _ = build_tiny_model(seed=0, sp_variant="cropping")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LANGUAGE_MODEL_LORA_TARGETS))
    lora_names = [name for name, _ in peft_model.named_parameters() if "lora_" in name]
    assert lora_names and all("language_model" in name for name in lora_names)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora_names} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable == lora_names

    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    generated = peft_model.generate(**inputs, max_new_tokens=4, min_new_tokens=4)
    assert generated.shape[1] == inputs.input_ids.shape[1] + 4
    with torch.no_grad():
        adapted = peft_model(**inputs).logits
        with peft_model.disable_adapter():
            assert not torch.allclose(adapted, peft_model(**inputs).logits)

    peft_model.save_pretrained(tmp_path / "adapter")
    base, _ = build_tiny_model(seed=0, sp_variant="cropping")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, adapted)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, LlavaSPForConditionalGeneration)
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted, atol=1e-4, rtol=1e-4)


def test_vision_tower_is_frozen_by_default_and_can_be_unfrozen():
    frozen, _ = build_tiny_model(sp_variant="pooling")
    assert not any(p.requires_grad for p in frozen.model.vision_tower.parameters())
    assert all(p.requires_grad for p in frozen.projector.parameters())
    trainable, _ = build_tiny_model(sp_variant="pooling", freeze_vision_tower=False)
    assert all(p.requires_grad for p in trainable.model.vision_tower.parameters())


def test_spatial_convs_get_a_fan_in_init_also_when_missing_from_a_checkpoint(tiny_model_dir, tmp_path):
    fresh, _ = build_tiny_model(seed=1, sp_variant="cropping")
    conv = fresh.projector.spatial_extractor.convs[5]  # 24x24 kernel, fan-in 32*576
    assert conv.weight.std().item() == pytest.approx((32 * 576) ** -0.5, rel=0.1)

    # A LLaVA checkpoint without SP weights (e.g. LLaVA-1.5 as a starting point): the SP modules are initialised.
    state = load_file(tiny_model_dir / "model.safetensors")
    kept = {k: v for k, v in state.items() if "spatial_" not in k and "detail_" not in k}
    assert len(kept) < len(state)
    for item in tiny_model_dir.iterdir():
        if item.name != "model.safetensors":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlavaSPCheckpointError, match=r"missing from the checkpoint: 21 key\(s\): "
                       r"model\.multi_modal_projector\.detail_integrator\.detail_conv\.weight.*and 15 more;.*allow_new_spatial_modules"):
        LlavaSPForConditionalGeneration.from_pretrained(tmp_path)
    partial = LlavaSPForConditionalGeneration.from_pretrained(tmp_path, allow_new_spatial_modules=True)
    loaded_conv = partial.projector.spatial_extractor.convs[5].weight
    assert torch.isfinite(loaded_conv).all()
    assert loaded_conv.std().item() == pytest.approx((32 * 576) ** -0.5, rel=0.1)
    assert torch.equal(partial.projector.linear_1.weight, state["multi_modal_projector.linear_1.weight"])


def test_wrong_pixel_shape_is_a_clear_error(loaded):
    model, processor = loaded
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    bad = torch.randn(1, 3, 224, 224)
    with pytest.raises(LlavaSPInputError, match=r"pixel_values must have shape \(num_images, 3, 336, 336\), got \(1, 3, 224, 224\)"):
        model(input_ids=inputs.input_ids, pixel_values=bad)
    with pytest.raises(LlavaSPInputError, match="pixel_values must have shape"):
        model.generate(input_ids=inputs.input_ids, pixel_values=bad, max_new_tokens=2)
    with pytest.raises(LlavaSPInputError, match="got \\(3, 336, 336\\)"):
        model(input_ids=inputs.input_ids, pixel_values=bad.new_zeros(3, 336, 336))


def test_image_count_not_matching_placeholders_is_a_clear_error(loaded):
    model, processor = loaded
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    two_images = inputs.pixel_values.repeat(2, 1, 1, 1)
    with pytest.raises(LlavaSPInputError, match=r"582 image placeholder tokens .* 2 image\(s\) x 582 tokens per image = 1164"):
        model(input_ids=inputs.input_ids, pixel_values=two_images)
    with pytest.raises(LlavaSPInputError, match=r"0 image\(s\)"):
        model(input_ids=inputs.input_ids)
    truncated = inputs.input_ids[:, :300]
    with pytest.raises(LlavaSPInputError, match="truncation must not cut an image"):
        model(input_ids=truncated, pixel_values=inputs.pixel_values)


def test_load_refuses_a_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_llava_sp(tmp_path)


def test_project_images_exposes_the_dfi_attention_behind_the_image_tokens(loaded):
    model, processor = loaded
    pixels = processor(images=[_image(1), _image(2)], text=[PROMPT, PROMPT], return_tensors="pt").pixel_values
    with torch.no_grad():
        output = model.project_images(pixels)
        tokens = model.image_features(pixels)
    assert torch.equal(output.image_tokens, tokens)
    attention = output.detail_attention  # (images, 6 spatial tokens, 5x5 keys for kernel 16 on a 24 grid)
    assert attention.shape == (2, 6, 25)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 6), atol=1e-5)


def test_a_siglip_tower_without_cls_gives_the_square_grid(tiny_tokenizer):
    """SigLIP (paper Tab. 7) has no CLS token: strategy "full" keeps its 24 x 24 patches, and 'default' is refused."""
    from transformers import SiglipVisionConfig

    from sp_core.config import LlavaSPConfig, LlavaSPConfigError
    from sp_core.processing import build_llava_sp_processor
    from sp_core.tiny import TINY_VISION, tiny_config

    siglip = SiglipVisionConfig(**TINY_VISION)
    base = tiny_config(tiny_tokenizer, sp_variant="pooling").to_dict()
    base.pop("vision_config")
    with pytest.raises(LlavaSPConfigError, match=r"allowed for a siglip_vision_model tower: 'full'"):
        LlavaSPConfig.from_dict({**base, "vision_config": siglip.to_dict(), "vision_feature_select_strategy": "default"})
    config = LlavaSPConfig.from_dict({**base, "vision_config": siglip.to_dict(), "vision_feature_select_strategy": "full"})
    torch.manual_seed(0)
    model = LlavaSPForConditionalGeneration(config).eval()
    with torch.no_grad():
        assert model.image_features(torch.randn(2, 3, 336, 336)).shape == (2, 582, 64)
    processor = build_llava_sp_processor(config, tiny_tokenizer)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == config.image_token_id).sum()) == 582
    assert model.generate(**inputs, max_new_tokens=3, min_new_tokens=3).shape[1] == inputs.input_ids.shape[1] + 3

"""llava-hf checkpoints, in every layout transformers reads, load exactly through every entry point, or fail naming
the keys. The hub's layout is stored as transformers 4.x wrote it (data/llava_hf_hub); today's layouts are written
here by transformers' own LlavaForConditionalGeneration.save_pretrained."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from sp_core.checkpoint_check import LlavaSPCheckpointError
from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams
from sp_core.loading import load_llava_sp
from sp_core.modeling import LlavaSPForConditionalGeneration
from sp_core.processing import clip_image_processor
from sp_core.tiny import TINY_TEXT, TINY_VISION

HUB_CHECKPOINT = Path(__file__).parent / "data" / "llava_hf_hub"
PROMPT = "USER: <image>\nWhat colour is the shape? ASSISTANT:"
# What tells each layout apart: a key prefix only it has.
LAYOUT_MARKERS = {"hub": "vision_tower.vision_model.", "saved": "language_model.model.", "saved-new-keys": "model.language_model."}


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))


def _weight_keys(directory: Path) -> set[str]:
    with safe_open(str(directory / "model.safetensors"), "pt") as weights:
        return set(weights.keys())


@pytest.fixture(scope="module")
def llava_hf(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    """The three llava-hf layouts, each with the processor llava-hf ships (CLIP preprocessing, 576 placeholders)."""
    root = tmp_path_factory.mktemp("llava-hf")
    config = LlavaConfig.from_pretrained(HUB_CHECKPOINT)
    assert config.text_config.vocab_size == len(tiny_tokenizer)
    assert config.image_token_id == tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert {k: getattr(config.text_config, k) for k in TINY_TEXT} == TINY_TEXT
    assert {k: getattr(config.vision_config, k) for k in TINY_VISION} == TINY_VISION
    dirs = {"hub": Path(shutil.copytree(HUB_CHECKPOINT, root / "hub"))}
    torch.manual_seed(1)
    fresh = LlavaForConditionalGeneration(config).eval()
    fresh.save_pretrained(root / "saved")
    fresh.save_pretrained(root / "saved-new-keys", save_original_format=False)
    dirs.update(saved=root / "saved", **{"saved-new-keys": root / "saved-new-keys"})
    processor = LlavaProcessor(image_processor=clip_image_processor(336), tokenizer=tiny_tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    for layout, directory in dirs.items():
        processor.save_pretrained(directory)
        assert any(key.startswith(LAYOUT_MARKERS[layout]) for key in _weight_keys(directory)), layout
    return dirs


def _reference(directory: Path) -> LlavaForConditionalGeneration:
    return LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()


def _assert_same_answers(model, reference, processor) -> None:
    """fp32 logits within 1e-5 and greedy generation equal token for token, on an image chat."""
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-5, rtol=1e-5)
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(model.generate(**inputs, **settings), reference.generate(**inputs, **settings))


@pytest.mark.parametrize("layout", list(LAYOUT_MARKERS))
def test_llava_hf_loads_as_the_baseline_equal_to_transformers(llava_hf, layout):
    directory = llava_hf[layout]
    reference = _reference(directory)
    model, processor = load_llava_sp(directory)
    assert model.config.sp_variant == "none" and model.config.image_tokens_per_image == 576
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == 576
    reference_state = reference.state_dict()
    assert model.state_dict().keys() == reference_state.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference_state[name].float()), name
    _assert_same_answers(model, reference, processor)
    direct = LlavaSPForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    _assert_same_answers(direct, reference, processor)


def test_llava_hf_serves_and_evaluates_the_same_answers(llava_hf):
    """The generator behind Serve and batch evaluation, from a llava-hf directory."""
    reference = _reference(llava_hf["hub"])
    generator = LlavaSPGenerator.from_pretrained(llava_hf["hub"], aspect="pad", resize="pil")
    request = GenerationRequest(turns=["<image>\nWhat colour is the shape?"], images=[_image()],
                                sampling=SamplingParams(max_new_tokens=6, ignore_eos=True))
    prepared = generator.prepare(request)
    [result] = generator.generate([prepared])
    input_ids = torch.tensor([prepared.input_ids])
    expected = reference.generate(input_ids=input_ids, pixel_values=prepared.pixel_values, max_new_tokens=6,
                                  min_new_tokens=6, do_sample=False, suppress_tokens=[reference.config.image_token_id])
    assert result.token_ids == expected[0, input_ids.shape[1]:].tolist()


def test_llava_hf_becomes_an_sp_variant_only_when_asked_and_keeps_its_tensors(llava_hf):
    with pytest.raises(LlavaSPCheckpointError, match=r"missing from the checkpoint: 21 key\(s\): "
                       r"model\.multi_modal_projector\.detail_integrator.*allow_new_spatial_modules=True"):
        load_llava_sp(llava_hf["hub"], sp_variant="cropping")
    model, processor = load_llava_sp(llava_hf["hub"], sp_variant="cropping", allow_new_spatial_modules=True)
    assert model.config.image_tokens_per_image == 582
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == 582
    reference = _reference(llava_hf["hub"]).state_dict()
    own = model.state_dict()
    spatial = sorted(set(own) - set(reference))
    assert spatial and all(".spatial_" in name or ".detail_" in name for name in spatial)
    for name, tensor in reference.items():
        assert torch.equal(own[name], tensor.float()), name
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.parametrize("layout", list(LAYOUT_MARKERS))
def test_save_and_reload_keeps_every_tensor(llava_hf, layout, tmp_path):
    model, processor = load_llava_sp(llava_hf[layout], sp_variant="pooling", allow_new_spatial_modules=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for reloaded in (load_llava_sp(tmp_path)[0], AutoModelForImageTextToText.from_pretrained(tmp_path)):
        assert isinstance(reloaded, LlavaSPForConditionalGeneration)
        assert reloaded.state_dict().keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            assert torch.equal(reloaded.state_dict()[name], tensor), name


def _edited_copy(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def _entry_points(directory: Path, ours: bool):
    yield lambda: load_llava_sp(directory)
    yield lambda: LlavaSPForConditionalGeneration.from_pretrained(directory)
    yield lambda: LlavaSPGenerator.from_pretrained(directory, aspect="pad", resize="pil")  # Serve and evaluation
    if ours:  # the Auto classes give a llava-hf directory to transformers' own class
        yield lambda: AutoModelForImageTextToText.from_pretrained(directory)


QUERY = "language_model.model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("edit, message", [
    (lambda weights: weights.pop(QUERY),
     r"missing from the checkpoint: 1 key\(s\): model\.language_model\.layers\.0\.self_attn\.q_proj\.weight$"),
    (lambda weights: weights.update({QUERY.replace("q_proj", "query"): weights.pop(QUERY)}),
     r"missing from the checkpoint: 1 key\(s\): model\.language_model\.layers\.0\.self_attn\.q_proj\.weight\n"
     r"  - in the checkpoint but not in the model: 1 key\(s\): model\.language_model\.layers\.0\.self_attn\.query\.weight"),
    (lambda weights: weights.update({QUERY: weights[QUERY][:, :32].contiguous()}),
     r"model\.language_model\.layers\.0\.self_attn\.q_proj\.weight has shape \(64, 32\) in the checkpoint, "
     r"\(64, 64\) in the model"),
])
def test_a_wrong_checkpoint_fails_naming_the_key_at_every_entry_point(llava_hf, tmp_path, edit, message):
    saved = tmp_path / "ours"
    load_llava_sp(llava_hf["saved"])[0].save_pretrained(saved)  # our own directory, as training exports it
    shutil.copy(llava_hf["saved"] / "processor_config.json", saved)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llava_hf["saved"] / name, saved)
    for source in (llava_hf["hub"], saved):
        broken = _edited_copy(source, tmp_path / f"broken-{source.name}", edit)
        for entry_point in _entry_points(broken, ours=source == saved):
            with pytest.raises(LlavaSPCheckpointError, match=message):
                entry_point()

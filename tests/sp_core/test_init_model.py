"""llava-sp-init: the stage-1 starting model from a base LLM and a CLIP tower (tiny stand-ins, nothing downloaded)."""

from __future__ import annotations

import json
import logging
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from pipelines.commands.init_model import main
from sp_core.checkpoint_check import LlavaSPCheckpointError
from sp_core.config import LlavaSPConfigError
from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.init_model import PROVENANCE_FILE, InitModelError, build_initial_model
from sp_core.loading import load_llava_sp
from sp_core.tiny import TINY_TEXT, TINY_VISION
from tests.sp_core.serving_answers import assert_serves_like_generate

COMMAND = "pipelines.commands.init_model"  # llava-sp-init

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SOURCE_MEAN, SOURCE_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # not CLIP's: shows the source's config was read
PROMPT = "USER: <image>\nWhat colour is the circle? ASSISTANT:"


def _tokenizer_without_image_token() -> PreTrainedTokenizerFast:
    """A Vicuna-like tokenizer: byte-level BPE, BOS prepended, unk/bos/eos, no pad and no <image>."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[UNK, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["USER: ASSISTANT: What colour is the circle? red green blue left right"], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                   model_max_length=2048)


@dataclass
class Sources:
    llm_dir: Path
    vision_dir: Path
    llm_state: dict[str, torch.Tensor]
    vision_state: dict[str, torch.Tensor]
    vocab_size: int  # of the source tokenizer and LLM


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    root = tmp_path_factory.mktemp("init-sources")
    tokenizer = _tokenizer_without_image_token()
    assert "<image>" not in tokenizer.get_vocab() and tokenizer.pad_token is None
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                       eos_token_id=tokenizer.eos_token_id, **TINY_TEXT))
    llm.save_pretrained(root / "vicuna")
    tokenizer.save_pretrained(root / "vicuna")
    vision = CLIPVisionModel(CLIPVisionConfig(**TINY_VISION))
    vision.save_pretrained(root / "clip")
    # The format of openai/clip-vit-large-patch14-336's preprocessor_config.json (ints, a feature extractor type).
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": SOURCE_MEAN, "image_std": SOURCE_STD,
        "resample": 3, "size": 336}))
    return Sources(root / "vicuna", root / "clip", {k: v.clone() for k, v in llm.state_dict().items()},
                   {k: v.clone() for k, v in vision.state_dict().items()}, len(tokenizer))


def _assert_sources_kept(model, sources: Sources, dtype: torch.dtype = torch.float32) -> None:
    """LLM and vision weights equal the sources bit for bit; only the added <image> row is new (at the old mean)."""
    vocab = sources.vocab_size
    language_model = model.model.language_model.state_dict()
    resized = {"model.embed_tokens.weight", "lm_head.weight"}
    for key, source in sources.llm_state.items():
        ours = model.lm_head.weight if key == "lm_head.weight" else language_model[key.removeprefix("model.")]
        source = source.to(dtype)
        if key in resized:
            assert ours.shape == (vocab + 1, source.shape[1]), key
            assert torch.equal(ours[:vocab], source), key
            torch.testing.assert_close(ours[vocab].float(), source.float().mean(0), atol=1e-3, rtol=0)
        else:
            assert torch.equal(ours, source), key
    vision = model.model.vision_tower.state_dict()
    assert set(vision) == set(sources.vision_state)
    for key, source in sources.vision_state.items():
        assert torch.equal(vision[key], source.to(dtype)), key


@pytest.mark.parametrize("variant, placeholders", [("none", 576), ("cropping", 582), ("pooling", 582)])
def test_builds_a_loadable_starting_model_from_the_sources(sources, tmp_path, variant, placeholders):
    out = build_initial_model(str(sources.llm_dir), str(sources.vision_dir), tmp_path / "init", sp_variant=variant)
    assert out == tmp_path / "init"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model, processor = load_llava_sp(out)

    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == sources.vocab_size  # appended after the source vocabulary
    assert model.config.image_token_id == image_id
    assert model.config.text_config.vocab_size == sources.vocab_size + 1
    assert tokenizer.pad_token == UNK and model.generation_config.pad_token_id == tokenizer.unk_token_id
    assert model.generation_config.suppress_tokens == [image_id] and model.generation_config.do_sample is False
    assert (model.config.sp_variant, model.config.vision_feature_layer) == (variant, -2)
    assert model.config.image_tokens_per_image == placeholders
    _assert_sources_kept(model, sources)

    # A fresh projector, initialised by the model's _init_weights (not PyTorch's defaults: kaiming std ~0.10 here).
    projector = model.projector
    assert abs(projector.linear_1.weight.std().item() - 0.02) < 0.003
    assert not projector.linear_1.bias.any() and not projector.linear_2.bias.any()
    if variant == "none":
        assert projector.spatial_extractor is None
    else:
        convs = projector.spatial_extractor.convs
        assert len(convs) == 6
        for conv in convs:
            fan_in = conv.weight[0].numel()  # 32 x side x side
            assert abs(conv.weight.std().item() * fan_in**0.5 - 1.0) < 0.15
        assert projector.detail_integrator is not None  # LlavaSPConfig's default sp_dfi=True

    # The source's image processor settings, and <image> -> the model's placeholder count.
    assert list(processor.image_processor.image_mean) == SOURCE_MEAN
    pipeline_images = LlavaSPImageProcessor.from_pretrained_dir(out)  # what jobs/preprocess.py reads
    assert (pipeline_images.image_size, list(pipeline_images.image_mean)) == (336, SOURCE_MEAN)
    image = Image.new("RGB", (400, 300), (200, 30, 30))
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    assert inputs.pixel_values.shape == (1, 3, 336, 336)
    assert int((inputs.input_ids == image_id).sum()) == placeholders
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    new_tokens = generated[0, inputs.input_ids.shape[1]:]
    assert new_tokens.shape == (3,) and image_id not in new_tokens.tolist()

    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["vocab_size"] == {"source": sources.vocab_size, "model": sources.vocab_size + 1}
    assert provenance["weights"] == {"base_llm": "safetensors", "vision_tower": "safetensors"}


def test_cli_round_trip_passes_options_and_dtype(sources, tmp_path, capsys):
    out = tmp_path / "init-cli"
    code = main([f"base_llm={sources.llm_dir}", f"vision_tower={sources.vision_dir}", f"out={out}",
                 "sp_variant=cropping", "sp_num_tokens=3", "sp_dfi=false", "sp_dfi_kernel=12", "sp_projector_bias=false",
                 "dtype=bfloat16", "seed=1"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    model, processor = load_llava_sp(out, dtype=torch.bfloat16)
    config = model.config
    assert (config.sp_variant, config.sp_num_tokens, config.sp_dfi, config.sp_dfi_kernel, config.sp_projector_bias) \
        == ("cropping", 3, False, 12, False)
    assert model.projector.detail_integrator is None and model.projector.spatial_projector[1].bias is None
    assert next(model.parameters()).dtype == torch.bfloat16
    _assert_sources_kept(model, sources, dtype=torch.bfloat16)
    inputs = processor(images=Image.new("RGB", (336, 336)), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == config.image_token_id).sum()) == 576 + 3

    # Same seed, same projector: the API and the CLI build the same starting model.
    again = build_initial_model(str(sources.llm_dir), str(sources.vision_dir), tmp_path / "init-api",
                                dtype=torch.bfloat16, seed=1, sp_variant="cropping", sp_num_tokens=3, sp_dfi=False,
                                sp_projector_bias=False)
    reloaded, _ = load_llava_sp(again, dtype=torch.bfloat16)
    for (name, ours), theirs in zip(model.projector.state_dict().items(), reloaded.projector.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_python_dash_m_reports_a_bad_vision_tower_in_one_line(sources, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-clip"
    monkeypatch.setattr(sys, "argv", ["llava-sp-init", f"base_llm={sources.llm_dir}", f"vision_tower={missing}",
                                      f"out={tmp_path / 'out'}"])
    monkeypatch.delitem(sys.modules, COMMAND, raising=False)  # as `python -m` finds it: not yet imported
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(COMMAND, run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"llava-sp-init: error: vision tower {str(missing)!r} does not exist")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory) -> Path:
    """Config-only directories: every check below fails before any weights are read."""
    root = tmp_path_factory.mktemp("bad-sources")
    CLIPVisionConfig(**{**TINY_VISION, "num_hidden_layers": 1}).save_pretrained(root / "clip-1-layer")
    (root / "not-a-model").mkdir()
    (root / "weights.safetensors").write_bytes(b"")
    return root


@pytest.mark.parametrize("llm, vision, options, error, match", [
    ("LLM", "LLM", {}, InitModelError, r"vision tower '.*vicuna' is not a CLIP or SigLIP tower: model_type 'llama'"),
    ("CLIP", "CLIP", {}, InitModelError, r"base LLM '.*clip' is not a causal LM: model_type 'clip_vision_model'"),
    ("LLM", "clip-1-layer", {}, InitModelError, r"has 1 layer\(s\); LLaVA reads the penultimate layer \(-2\)"),
    ("LLM", "not-a-model", {}, InitModelError, r"vision tower '.*not-a-model' has no config.json"),
    ("LLM", "weights.safetensors", {}, InitModelError, r"is a file; expected a model directory or a hub id"),
    ("LLM", "CLIP", {"sp_tokens": 6}, InitModelError, r"unknown option\(s\) sp_tokens; allowed: sp_variant"),
    ("LLM", "CLIP", {"sp_variant": "cropping", "sp_num_tokens": 5}, LlavaSPConfigError,
     r"sp_num_tokens=5 is not possible for sp_variant='cropping' on a 24x24 grid"),
])
def test_bad_inputs_are_named(sources, bad_sources, tmp_path, llm, vision, options, error, match):
    named = {"LLM": sources.llm_dir, "CLIP": sources.vision_dir}
    with pytest.raises(error, match=match):
        build_initial_model(str(named.get(llm, bad_sources / llm)), str(named.get(vision, bad_sources / vision)),
                            tmp_path / "out", **options)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_refuses_to_overwrite_an_existing_model(sources, tmp_path):
    out = tmp_path / "init"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(InitModelError, match=r"already exists and is not an empty directory"):
        build_initial_model(str(sources.llm_dir), str(sources.vision_dir), out)
    assert (out / "config.json").read_text() == "{}"


def test_whole_clip_checkpoint_and_bin_only_llm(sources, tmp_path, caplog):
    """openai/clip-* hold a whole CLIPModel and no preprocessor override here; an LLM with only pickled .bin
    weights loads with the library default, and the log says so."""
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    clip = CLIPModel(CLIPConfig(vision_config=TINY_VISION, text_config=text, projection_dim=16))
    clip.save_pretrained(tmp_path / "clip-full")
    llm_bin = tmp_path / "vicuna-bin"
    llm_bin.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (llm_bin / name).write_bytes((sources.llm_dir / name).read_bytes())
    torch.save(sources.llm_state, llm_bin / "pytorch_model.bin")

    with caplog.at_level(logging.INFO, logger="sp_core.init_model"):
        out = build_initial_model(str(llm_bin), str(tmp_path / "clip-full"), tmp_path / "init", sp_variant="pooling")
    assert "has no safetensors weights: loading it with the library default" in caplog.text
    assert "has no preprocessor_config.json: using CLIP's defaults at 336 px" in caplog.text
    model, processor = load_llava_sp(out)
    _assert_sources_kept(model, Sources(llm_bin, tmp_path / "clip-full", sources.llm_state,
                                        clip.vision_model.state_dict(), sources.vocab_size))
    assert list(processor.image_processor.image_mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["weights"] == {"base_llm": "library default", "vision_tower": "safetensors"}
    assert provenance["image_processor"] == "CLIP defaults"


def test_a_sentencepiece_only_tokenizer_without_sentencepiece_is_named(sources, tmp_path, monkeypatch):
    """Vicuna ships tokenizer.model only; transformers 5 converts it with the sentencepiece package."""
    llm = tmp_path / "vicuna-spm"
    llm.mkdir()
    (llm / "config.json").write_bytes((sources.llm_dir / "config.json").read_bytes())
    (llm / "tokenizer.model").write_bytes(b"\n")
    monkeypatch.setattr("sp_core.init_model.is_sentencepiece_available", lambda: False)
    with pytest.raises(InitModelError, match=r"SentencePiece tokenizer.model .* pip install sentencepiece"):
        build_initial_model(str(llm), str(sources.vision_dir), tmp_path / "out")


def test_a_base_llm_with_a_missing_weight_is_refused_naming_it(sources, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "vicuna-broken"
    broken.mkdir()
    for item in sources.llm_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.0.self_attn.q_proj.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlavaSPCheckpointError, match=r"vicuna-broken does not fit the model exactly:\n  - missing from "
                                                     r"the checkpoint: 1 key\(s\): model\.layers\.0\.self_attn\.q_proj"):
        build_initial_model(str(broken), str(sources.vision_dir), tmp_path / "out")
    assert main([f"base_llm={broken}", f"vision_tower={sources.vision_dir}", f"out={tmp_path / 'o'}"]) == 2


def test_a_qwen2_llm_with_tied_embeddings_starts_exactly(sources, tmp_path, tiny_tokenizer):
    """The paper's Tab. 7 pairs a Qwen2 LLM with the SP projector; Qwen2-0.5B ties lm_head to the embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(3)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tiny_tokenizer), bos_token_id=tiny_tokenizer.bos_token_id,
                                        eos_token_id=tiny_tokenizer.eos_token_id,
                                        **TINY_TEXT | {"tie_word_embeddings": True}))
    qwen.save_pretrained(tmp_path / "qwen2")
    tiny_tokenizer.save_pretrained(tmp_path / "qwen2")
    out = build_initial_model(str(tmp_path / "qwen2"), str(sources.vision_dir), tmp_path / "init", sp_variant="pooling")
    model, processor = load_llava_sp(out)
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    reference = Qwen2ForCausalLM.from_pretrained(tmp_path / "qwen2", dtype=torch.float32).eval()
    text = tiny_tokenizer("USER: What colour is the circle? ASSISTANT:", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**text).logits, reference(**text).logits, atol=1e-5, rtol=1e-5)
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(**text, **settings), reference.generate(**text, **settings))
    inputs = processor(images=Image.new("RGB", (64, 48), "red"), text=PROMPT, return_tensors="pt")
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == 582
    assert model.generate(**inputs, **settings).shape[1] == inputs.input_ids.shape[1] + 6
    assert_serves_like_generate(out, model, Image.new("RGB", (64, 48), "red"))


def test_a_llama_llm_starts_with_the_sources_answers(sources, tmp_path):
    """Text-only, the starting model is the base LLM: fp32 logits over the source vocabulary within 1e-5 and greedy
    tokens equal (the added <image> row is never generated)."""
    out = build_initial_model(str(sources.llm_dir), str(sources.vision_dir), tmp_path / "init", sp_variant="cropping")
    model, processor = load_llava_sp(out)
    reference = LlamaForCausalLM.from_pretrained(sources.llm_dir, dtype=torch.float32).eval()
    text = processor.tokenizer("USER: What colour is the circle? ASSISTANT:", return_tensors="pt")
    with torch.no_grad():
        ours = model(**text).logits[..., : sources.vocab_size]
        torch.testing.assert_close(ours, reference(**text).logits, atol=1e-5, rtol=1e-5)
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(**text, **settings), reference.generate(**text, **settings))


SIGLIP_SIZE = 384  # google/siglip-so400m-patch14-384: a 27 x 27 grid, no CLS token


@pytest.fixture(scope="module")
def siglip(tmp_path_factory) -> tuple[Path, SiglipVisionModel]:
    """A SigLIP tower as google/siglip-* ship it: SiglipVisionModel weights and SiglipImageProcessor's config."""
    directory = tmp_path_factory.mktemp("siglip") / "siglip"
    torch.manual_seed(5)
    tower = SiglipVisionModel(SiglipVisionConfig(**TINY_VISION | {"image_size": SIGLIP_SIZE})).eval()
    tower.save_pretrained(directory)
    SiglipImageProcessorPil(size={"height": SIGLIP_SIZE, "width": SIGLIP_SIZE}).save_pretrained(directory)
    return directory, tower


def _noise_image(width: int, height: int) -> Image.Image:
    generator = torch.Generator().manual_seed(width * height)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    return Image.fromarray(pixels.numpy())


def test_a_siglip_tower_starts_the_model_with_its_whole_grid_and_preprocessing(sources, siglip, tmp_path):
    """The paper's Tab. 7 and the model card's claim: any square-grid tower. SigLIP keeps all 27 x 27 patches
    (strategy "full"), and its images are resized to 384 x 384 uncropped, by the processor and by the data pipeline
    alike."""
    directory, tower = siglip
    out = build_initial_model(str(sources.llm_dir), str(directory), tmp_path / "init", sp_variant="pooling",
                              sp_num_tokens=3)
    model, processor = load_llava_sp(out)
    grid = SIGLIP_SIZE // TINY_VISION["patch_size"]
    assert (model.config.vision_feature_select_strategy, model.config.image_tokens_per_image) == ("full", grid**2 + 3)
    for name, tensor in tower.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name

    image = _noise_image(500, 300)
    reference_pixels = SiglipImageProcessorPil.from_pretrained(directory)(image, return_tensors="pt").pixel_values
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    assert torch.equal(inputs.pixel_values, reference_pixels)
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == grid**2 + 3
    pipeline = LlavaSPImageProcessor.from_pretrained_dir(out, aspect="square")  # what jobs/preprocess.py reads
    assert (pipeline.fit, pipeline.image_size, pipeline.image_mean) == ("squash", SIGLIP_SIZE, (0.5, 0.5, 0.5))
    torch.testing.assert_close(pipeline([image]), reference_pixels, atol=1e-6, rtol=0)
    with torch.no_grad():  # every patch of the penultimate layer goes through the projector
        hidden = tower(reference_pixels, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(model.image_features(reference_pixels), model.projector(hidden),
                                   atol=1e-5, rtol=1e-5)
    served_pixels = assert_serves_like_generate(out, model, image, aspect="square")  # Serve and batch evaluation
    torch.testing.assert_close(served_pixels, reference_pixels, atol=1e-6, rtol=0)


def test_a_whole_siglip_checkpoint_gives_its_vision_tower(sources, tmp_path):
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 100}
    whole = SiglipModel(SiglipConfig(text_config=text, vision_config=TINY_VISION | {"image_size": SIGLIP_SIZE}))
    whole.save_pretrained(tmp_path / "siglip-whole")
    out = build_initial_model(str(sources.llm_dir), str(tmp_path / "siglip-whole"), tmp_path / "init",
                              sp_variant="none")
    model, processor = load_llava_sp(out)
    assert model.config.image_tokens_per_image == (SIGLIP_SIZE // TINY_VISION["patch_size"]) ** 2
    assert type(processor.image_processor).__name__.startswith("SiglipImageProcessor")  # SigLIP's defaults
    vision = model.model.vision_tower.state_dict()
    assert set(vision) == set(whole.vision_model.state_dict())
    for name, tensor in whole.vision_model.state_dict().items():
        assert torch.equal(vision[name], tensor), name

"""llava-sp-convert on a full (non-LoRA) official checkpoint: LlavaLlamaForCausalLM's own save_pretrained.

The fixture is written by transformers' save_pretrained from LlavaLlamaForCausalLM's module tree (a
LlamaForCausalLM whose inner model also holds the CLIP tower as `vision_tower.vision_tower` and the projector
modules under their official names), so the LLM and tower keys are the real classes' own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from pipelines.commands.convert import main
from sp_core.loading import load_llava_sp
from sp_core.tiny import TINY_TEXT, TINY_VISION
from tests.sp_core.official_reference import (
    official_projector_forward,
    official_state_dict,
)
from tests.sp_core.serving_answers import assert_serves_like_generate
from tests.sp_core.test_init_model import _noise_image, _tokenizer_without_image_token

PROMPT = "USER: What colour is the circle? ASSISTANT:"
OLD_ROTARY_BUFFER = "model.layers.0.self_attn.rotary_emb.inv_freq"
PROJECTOR_WIDTHS = dict(vision_width=TINY_VISION["hidden_size"], spatial_width=16, text_width=TINY_TEXT["hidden_size"])


class OfficialLlavaLlamaLayout(LlamaForCausalLM):
    """LlavaLlamaForCausalLM's module tree: the CLIP tower wrapped as CLIPVisionTower wraps it, and the projector
    modules, on the inner model beside the LLaMA layers."""

    def attach(self, vision: CLIPVisionModel | None, projector_state: dict[str, torch.Tensor]) -> None:
        if vision is not None:
            # CLIPVisionTower.vision_tower is a CLIPVisionModel, which in transformers 4 (the official code's) held
            # the tower as .vision_model; today's holds it directly, so one level restores the official key names.
            self.model.vision_tower = nn.Module()
            self.model.vision_tower.vision_tower = nn.Module()
            self.model.vision_tower.vision_tower.vision_model = vision
        for name, tensor in projector_state.items():
            *path, leaf = name.split(".")
            module = self.model
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(tensor.clone()))


@dataclass
class OfficialFull:
    directory: Path
    clip_dir: Path
    llm: LlamaForCausalLM
    clip: CLIPVisionModel
    projector_state: dict[str, torch.Tensor]  # official names without the `model.` prefix


def _write_official_full(root: Path, variant: str, dfi: bool, with_tower: bool, bin_shards: bool) -> OfficialFull:
    tokenizer = _tokenizer_without_image_token()
    torch.manual_seed(0)
    text_config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=0, **TINY_TEXT)
    llm = LlamaForCausalLM(text_config).eval()
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY_VISION)).eval()
    clip.save_pretrained(root / "clip")
    if with_tower:  # the checkpoint's own tower differs from --vision-tower's, and is the one to use
        clip = CLIPVisionModel(clip.config).eval()
    projector_state = official_state_dict(variant, dfi=dfi, spatial_bias=dfi, prefix="", seed=3, **PROJECTOR_WIDTHS)

    official = OfficialLlavaLlamaLayout(text_config)
    official.load_state_dict(llm.state_dict())
    official.attach(clip if with_tower else None, projector_state)
    directory = root / "official-full"
    official.save_pretrained(directory, max_shard_size="100KB")
    if bin_shards:
        _as_bin_shards(directory)
    tokenizer.save_pretrained(directory)
    # The official config.json: the LLaMA config with LLaVA's keys added (llava-v1.5-7b's, at tiny size).
    config = {**json.loads((directory / "config.json").read_text()), "architectures": ["LlavaLlamaForCausalLM"],
              "model_type": "llava_llama", "mm_vision_tower": str(root / "clip"), "mm_hidden_size": 32,
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
              "mm_patch_merge_type": "flat", "tune_mm_mlp_adapter": False, "use_mm_proj": True}
    (directory / "config.json").write_text(json.dumps(config))
    return OfficialFull(directory, root / "clip", llm, clip, projector_state)


def _as_bin_shards(directory: Path) -> None:
    """The .bin shards LLaVA-1.5's release has (transformers 4.x wrote each shard with torch.save and indexed them
    in pytorch_model.bin.index.json; today's transformers writes safetensors only)."""
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    renamed = {}
    shards = sorted(set(index["weight_map"].values()))
    for number, shard in enumerate(shards, start=1):
        renamed[shard] = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        tensors = load_file(str(directory / shard))
        if number == 1:  # transformers <= 4.30 also saved LLaMA's rotary tables, which transformers' rules skip
            head_dim = TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"]
            tensors[OLD_ROTARY_BUFFER] = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
            index["weight_map"][OLD_ROTARY_BUFFER] = shard
        torch.save(tensors, directory / renamed[shard])
        (directory / shard).unlink()
    index["weight_map"] = {key: renamed[shard] for key, shard in index["weight_map"].items()}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (directory / "model.safetensors.index.json").unlink()


def _convert(official: OfficialFull, out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main([f"checkpoint={official.directory}", f"out={out}", "dtype=float32", *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "variant, dfi, with_tower, bin_shards",
    [("pooling", False, True, False), ("cropping", True, False, True)],
    ids=["pooling-safetensors-with-tower", "cropping-dfi-bin-shards-tower-from-clip"],
)
def test_a_full_official_checkpoint_converts_exactly(tmp_path, capsys, variant, dfi, with_tower, bin_shards):
    official = _write_official_full(tmp_path, variant, dfi, with_tower, bin_shards)
    weights = {path.name for path in official.directory.iterdir()}
    index = json.loads(next(official.directory.glob("*.index.json")).read_text())["weight_map"]
    assert ("model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight" in index) == with_tower
    assert {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight", "model.mm_projector.0.weight"} <= set(index)
    assert (OLD_ROTARY_BUFFER in index) == bin_shards
    assert ("pytorch_model.bin.index.json" if bin_shards else "model.safetensors.index.json") in weights
    assert len([name for name in weights if name.endswith((".bin", ".safetensors"))]) > 2  # sharded
    code, err = _convert(official, tmp_path / "converted", capsys)
    assert code == 0, err

    model, processor = load_llava_sp(tmp_path / "converted")
    assert (model.config.sp_variant, model.config.sp_dfi) == (variant, dfi)
    tokenizer = processor.tokenizer
    vocab = official.llm.config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<image>") == vocab == model.config.image_token_id
    # The LLM is the checkpoint's: every source row and weight bit for bit, so text logits and greedy tokens match.
    assert torch.equal(model.lm_head.weight[:vocab], official.llm.lm_head.weight)
    text = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        ours = model(**text).logits[..., :vocab]
        torch.testing.assert_close(ours, official.llm(**text).logits, atol=1e-5, rtol=1e-5)
        settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, suppress_tokens=[vocab])
        assert torch.equal(model.generate(**text, **settings), official.llm.generate(**text, **settings))
        features = torch.randn(1, 576, TINY_VISION["hidden_size"])
        reference = official_projector_forward(official.projector_state, features, variant, dfi=dfi)
        torch.testing.assert_close(model.projector(features), reference, atol=1e-5, rtol=1e-5)
    for name, tensor in official.clip.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name
    assert_serves_like_generate(tmp_path / "converted", model, _noise_image(80, 60))


def test_a_wrong_full_checkpoint_is_refused_naming_the_official_key(tmp_path, capsys):
    official = _write_official_full(tmp_path, "pooling", False, with_tower=True, bin_shards=False)
    index_file = official.directory / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())

    def drop(key: str) -> None:
        shard = official.directory / index["weight_map"].pop(key)
        tensors = load_file(str(shard))
        del tensors[key]
        save_file(tensors, str(shard), metadata={"format": "pt"})
        index_file.write_text(json.dumps(index))

    def replace(key: str, tensor: torch.Tensor) -> None:
        shard = official.directory / index["weight_map"][key]
        save_file(load_file(str(shard)) | {key: tensor}, str(shard), metadata={"format": "pt"})

    code, err = _convert(official, tmp_path / "out-base", capsys, "base_llm=lmsys/vicuna-7b-v1.5")
    assert code == 2 and "full checkpoint" in err and "base_llm= must not be given" in err

    norm = "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"
    replace(norm, torch.ones(16))
    code, err = _convert(official, tmp_path / "out-shape", capsys)
    assert code == 2 and ("(its vision tower, model.vision_tower.vision_tower.*) does not fit the model exactly: "
                          "- post_layernorm.weight has shape (16,) in the checkpoint, (32,) in the model") in err
    replace(norm, official.clip.post_layernorm.weight.detach())

    drop("model.layers.1.self_attn.q_proj.weight")
    code, err = _convert(official, tmp_path / "out-missing", capsys)
    assert code == 2 and ("official-full (its language model) does not fit the model exactly: - missing from the "
                          "checkpoint: 1 key(s): model.layers.1.self_attn.q_proj.weight") in err
    assert not (tmp_path / "out-missing").exists()


def test_an_unknown_key_in_a_full_checkpoint_is_named(tmp_path, capsys):
    official = _write_official_full(tmp_path, "cropping", True, with_tower=True, bin_shards=True)
    index_file = official.directory / "pytorch_model.bin.index.json"
    index = json.loads(index_file.read_text())
    shard = official.directory / next(iter(index["weight_map"].values()))
    tensors = torch.load(shard, weights_only=True)
    tensors["model.image_newline"] = torch.zeros(TINY_TEXT["hidden_size"])  # LLaVA-1.6's unpad merge
    torch.save(tensors, shard)
    index["weight_map"]["model.image_newline"] = shard.name
    index_file.write_text(json.dumps(index))
    code, err = _convert(official, tmp_path / "out", capsys)
    assert code == 2 and "belong to no part of a LLaVA-1.5 / LLaVA-SP model: model.image_newline" in err


def test_an_official_checkpoint_given_to_the_loader_says_to_convert_it(tmp_path):
    official = _write_official_full(tmp_path, "pooling", False, with_tower=True, bin_shards=False)
    with pytest.raises(ValueError, match=r"official LLaVA.*llava-sp-convert"):
        load_llava_sp(official.directory)

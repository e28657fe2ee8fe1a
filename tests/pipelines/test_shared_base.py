"""A variant's starting model takes every weight the shared base has, and keeps only its SP modules' own."""

import pytest
import torch

from pipelines.shared_base import graft_base_weights
from sp_core.loading import load_llava_sp
from sp_core.modeling import LlavaSPForConditionalGeneration
from sp_core.tiny import save_tiny_model

SP = {"sp_variant": "cropping", "sp_num_tokens": 4, "sp_dfi_kernel": 4, "image_size": 112}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared-base")
    base = save_tiny_model(root / "base", seed=1, sp_variant="none", image_size=112)  # seed 1: other weights
    variant = save_tiny_model(root / "variant", seed=0, **SP)
    return root, base, variant


def _weights(directory):
    return LlavaSPForConditionalGeneration.from_pretrained(directory).state_dict()


def test_shared_weights_come_from_the_base_and_sp_modules_stay_the_variants(models):
    root, base, variant = models
    started = graft_base_weights(base, variant, root / "started")
    grafted, base_weights, own = (_weights(path) for path in (root / "started", base, variant))
    assert set(grafted) == set(own)
    for name, tensor in grafted.items():
        expected = base_weights[name] if name in base_weights else own[name]
        assert torch.equal(tensor, expected), name
    assert any("spatial_extractor" in name for name in set(own) - set(base_weights))
    assert not torch.equal(grafted["lm_head.weight"], own["lm_head.weight"])  # the seeds differ: it was replaced
    model, processor = load_llava_sp(started)  # a complete model dir: config, tokenizer and processor files
    assert model.config.sp_variant == "cropping" and processor.image_processor.crop_size["height"] == 112


def test_a_base_with_other_towers_is_refused_naming_both_directories(models):
    root, _, variant = models
    other = save_tiny_model(root / "other-size", seed=0, sp_variant="none")  # 336 px: other position embeddings
    with pytest.raises(ValueError, match=r"other-size cannot be the base of .*variant: different shapes "
                                         r"\['model.vision_tower"):
        graft_base_weights(other, variant, root / "refused")
    assert not (root / "refused").exists()

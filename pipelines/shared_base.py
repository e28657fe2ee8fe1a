"""A variant's starting model that shares the weights of a common base: the way every LLaVA-SP variant of the paper
starts from the same CLIP and the same Vicuna, and differs only in its projector.

The sweep's rows share the untrained tiny baseline's weights; the demo's variants share the tiny LLM it first trains
on the synthetic captions (its stand-in for Vicuna). Weights the base lacks (the SP modules) keep the variant's own
initialisation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers.utils import CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_NAME

from sp_core.modeling import LlavaSPForConditionalGeneration

WRITTEN_BY_SAVE = {CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_NAME}


def graft_base_weights(base_dir: str | Path, variant_dir: str | Path, out_dir: str | Path) -> Path:
    """The model of `variant_dir` with every weight of `base_dir`'s model that it also has, saved to out_dir with the
    variant's tokenizer and processor files. Only projector (SP) weights may be missing from the base, and the base
    may hold nothing the variant lacks: anything else means the two are not the same towers."""
    base = LlavaSPForConditionalGeneration.from_pretrained(base_dir, use_safetensors=True).state_dict()
    model = LlavaSPForConditionalGeneration.from_pretrained(variant_dir, use_safetensors=True)
    own = model.state_dict()
    reshaped = [f"{name} {tuple(tensor.shape)} != {tuple(own[name].shape)}" for name, tensor in base.items()
                if name in own and tensor.shape != own[name].shape]
    unshared = [name for name in own if name not in base and "multi_modal_projector" not in name]
    extra = sorted(set(base) - set(own))
    if reshaped or unshared or extra:
        raise ValueError(f"{base_dir} cannot be the base of {variant_dir}: different shapes {reshaped[:3]}, "
                         f"missing from the base {unshared[:3]}, only in the base {extra[:3]}")
    model.load_state_dict(base, strict=False)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    for item in Path(variant_dir).iterdir():
        if item.is_file() and item.name not in WRITTEN_BY_SAVE and out_dir / item.name != item:
            shutil.copy(item, out_dir / item.name)
    return out_dir

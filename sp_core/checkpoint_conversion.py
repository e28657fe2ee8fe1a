"""transformers' own llava key renaming, applied to the LLaVA-SP classes.

transformers 5 renames the keys of llava checkpoints on load (the hub's `language_model.model.*`,
`language_model.lm_head.*`, `vision_tower.vision_model.*` and `multi_modal_projector.*` become today's
`model.language_model.*`, `lm_head.*`, ...) and writes them back on save, through rules it looks up by class name
and then by model type. Our classes have other names and the model type `llava_sp`, so they would get no rules and
a llava-hf checkpoint would load with its language model left at random initialisation. Registering the rules
that transformers holds for `llava` / `LlavaModel` under our names makes every llava layout load (and save) exactly
as it does for LlavaForConditionalGeneration; the rules themselves stay transformers' (nothing is copied).
"""

from __future__ import annotations

from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)

# Ours -> the transformers class or model type whose rules apply, in the order transformers looks them up.
RULES_OF = {
    "llava_sp": "llava",  # LlavaSPForConditionalGeneration, found by model type as LlavaForConditionalGeneration is
    "LlavaSPModel": "LlavaModel",  # the inner model, found by class name as LlavaModel is
}


def register_llava_key_renaming() -> None:
    """Give our classes transformers' llava renaming rules (idempotent)."""
    for ours, theirs in RULES_OF.items():
        rules = get_checkpoint_conversion_mapping(theirs)
        if rules is None:
            raise RuntimeError(
                f"transformers has no checkpoint conversion rules for {theirs!r} any more; llava-hf checkpoints "
                "cannot be renamed on load. This transformers release is not supported by sp_core"
            )
        register_checkpoint_conversion_mapping(ours, rules, overwrite=True)

"""A loaded checkpoint is used exactly, or the load fails naming the keys.

transformers' from_pretrained leaves a weight the checkpoint lacks at its random initialisation and only warns in
its load report; with a renamed layout that can be the whole language model, and everything downstream still runs.
Here every key the model expects must come from the checkpoint and every checkpoint key must be used. The one
exception is opt-in: the LLaVA-SP modules (SFE, DFI, spatial MLP) may start fresh when a LLaVA-1.5 checkpoint, which
has none, becomes the start of an SP variant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

SPATIAL_MODULE_PREFIXES = tuple(
    f"model.multi_modal_projector.{name}." for name in ("spatial_extractor", "detail_integrator", "spatial_projector")
)
# What a whole CLIPModel / SiglipModel checkpoint (openai/clip-vit-large-patch14-336) holds beside the vision tower
# LLaVA reads: the text tower, the projections to the joint space and the logit scale (and bias).
NON_VISION_PARTS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias")
LISTED_KEYS = 6  # how many keys of each kind an error names before it counts the rest


class LlavaSPCheckpointError(ValueError):
    """A checkpoint that does not fill the model exactly: missing, unexpected or wrong-shaped tensors."""


def is_spatial_module_key(key: str) -> bool:
    """A parameter of the LLaVA-SP modules, which a LLaVA-1.5 checkpoint does not have."""
    return key.startswith(SPATIAL_MODULE_PREFIXES)


def check_loaded_keys(
    source: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
    allow_new_spatial_modules: bool = False,
) -> list[str]:
    """Raise LlavaSPCheckpointError unless the load was exact; returns the SP keys left fresh (if allowed)."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    fresh = [key for key in missing if is_spatial_module_key(key)] if allow_new_spatial_modules else []
    missing = [key for key in missing if key not in fresh]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_listed(missing)}")
    if unexpected:
        problems.append(f"in the checkpoint but not in the model: {_listed(unexpected)}")
    for key, checkpoint_shape, model_shape in sorted(mismatched):
        problems.append(f"{key} has shape {tuple(checkpoint_shape)} in the checkpoint, {tuple(model_shape)} in the model")
    if problems:
        hint = ("; the SP modules may start fresh only with allow_new_spatial_modules=True"
                if any(is_spatial_module_key(key) for key in missing) else "")
        raise LlavaSPCheckpointError(
            f"checkpoint {source} does not fit the model exactly:\n  - " + "\n  - ".join(problems) + hint
        )
    return fresh


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} key(s): {', '.join(keys[:LISTED_KEYS])}{more}"


def load_exactly(model_class: Any, source: str | None, unused_prefixes: tuple[str, ...] = (),
                 label: str | None = None, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(source, **kwargs)` for a part we assemble from (a base LLM, a vision tower):
    every weight from the checkpoint, or LlavaSPCheckpointError naming the keys. Checkpoint keys under
    `unused_prefixes` may stay unused (the text tower of a whole CLIP checkpoint, when only its vision tower is
    wanted). source None with state_dict= loads tensors already read; `label` names them in errors."""
    kwargs["ignore_mismatched_sizes"] = True
    model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    unexpected = [key for key in info["unexpected_keys"] if not key.startswith(unused_prefixes)]
    check_loaded_keys(label or str(source), info["missing_keys"], unexpected, info["mismatched_keys"])
    return model


def load_state_exactly(module: nn.Module, state: dict[str, Tensor], source: str,
                       only: tuple[str, ...] | None = None) -> None:
    """`module.load_state_dict(state)` where every key of the module (or of its keys starting with `only`) comes
    from `state`, every tensor of `state` is used and every shape matches, or LlavaSPCheckpointError names them."""
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()
                if only is None or name.startswith(only)}
    mismatched = [(name, tuple(state[name].shape), expected[name]) for name in state.keys() & expected.keys()
                  if tuple(state[name].shape) != expected[name]]
    check_loaded_keys(source, expected.keys() - state.keys(), state.keys() - expected.keys(), mismatched)
    module.load_state_dict(state, strict=False)

"""Checkpoint layout: safetensors for the trained weights, DeepSpeed's own state for exact resume.

    <checkpoint>/
        trainer_state.json        step, samples seen, the plan's seed and shape, the config
        projector.safetensors     projector + SP weights (keys of LlavaSPProjector)
        adapter/                  LoRA adapter (peft save_pretrained, safetensors) in LoRA finetuning
        language_model.safetensors   the LLM and its output head, where the whole LLM was trained (full finetuning,
                                     pretrain_llm); keys as in the full model (model.language_model.*, lm_head.*)
        deepspeed/state/          optimizer / scheduler / trainable-parameter state of every rank (DeepSpeed format)
        model/                    final checkpoint only: a complete HF model dir (LoRA merged) + processor files
        probe.safetensors         final checkpoint only: one batch and the live model's logits on it

Under ZeRO-3 every parameter is partitioned across the ranks, so reading full weights (or running a forward) is a
collective: the functions here that take `write` are called by EVERY rank in the same order, and only the rank with
write=True writes files. Under ZeRO-2 the gathers are no-ops (deepspeed.zero.GatheredParameters skips parameters
that are not partitioned).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import deepspeed
import torch
from safetensors.torch import save_file

from pipelines.train.model_setup import (
    LANGUAGE_MODEL_WEIGHTS,
    PROJECTOR_WEIGHTS,
    unwrap,
)

TRAINER_STATE = "trainer_state.json"
PROBE = "probe.safetensors"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json",
                   "preprocessor_config.json", "chat_template.jinja", "chat_template.json", "tokenizer.model")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}


def is_partitioned(model: torch.nn.Module) -> bool:
    """True under ZeRO-3 (after deepspeed.initialize): the module's parameters hold only this rank's partition."""
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def save_trained_weights(model: torch.nn.Module, directory: Path, trains_llm: bool, write: bool = True) -> None:
    """What this run trained, as safetensors. Every rank calls it (ZeRO-3 gathers the trained parameters)."""
    base = unwrap(model)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    with deepspeed.zero.GatheredParameters(trained, modifier_rank=None):
        if not write:
            return
        save_file(_contiguous(base.projector.state_dict()), str(directory / PROJECTOR_WEIGHTS))
        if hasattr(model, "peft_config"):
            model.save_pretrained(directory / "adapter")  # only the adapter, safetensors
        elif trains_llm:
            save_file(_contiguous(language_model_state(base)), str(directory / LANGUAGE_MODEL_WEIGHTS))


def language_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LLM and its output head under the full model's key names (what load_stage1_weights expects)."""
    return {**{f"model.language_model.{name}": tensor for name, tensor in model.model.language_model.state_dict().items()},
            **{f"lm_head.{name}": tensor for name, tensor in model.lm_head.state_dict().items()}}


def save_probe(model: torch.nn.Module, batch: dict[str, torch.Tensor], directory: Path, write: bool = True) -> None:
    """The live model's logits (eval mode) on one batch, with the batch: probe.safetensors. Under ZeRO-3 every rank
    must run this with the same batch (the forward gathers each module's parameters from all ranks)."""
    inputs = {name: tensor for name, tensor in batch.items() if name != "labels"}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(**{name: tensor.to(device) for name, tensor in inputs.items()}).logits.float()
    model.train(was_training)
    if write:
        save_file(_contiguous({**inputs, "logits": logits}), str(directory / PROBE))


def full_state_dict(model: torch.nn.Module, write: bool = True) -> dict[str, torch.Tensor]:
    """The module's complete state dict as CPU copies, on the writing rank ({} elsewhere). Under ZeRO-3 every rank
    calls it: parameters are gathered one module at a time, so no rank ever holds the whole model at once."""
    state: dict[str, torch.Tensor] = {}
    persistent = set(model.state_dict(keep_vars=True)) if write else set()  # the names a state dict holds
    for prefix, module in model.named_modules(remove_duplicate=False):
        own = dict(module.named_parameters(recurse=False, remove_duplicate=False))
        with deepspeed.zero.GatheredParameters(list(own.values()), modifier_rank=None):
            if not write:
                continue
            for name, tensor in {**own, **dict(module.named_buffers(recurse=False))}.items():
                key = f"{prefix}.{name}" if prefix else name
                if tensor is not None and key in persistent:
                    state[key] = tensor.detach().to("cpu", copy=True)
    return state


def export_model(model: torch.nn.Module, base_model_dir: str, directory: Path, write: bool = True) -> Path:
    """A complete model directory for serving and evaluation: LoRA merged, processor files copied. Every rank calls
    it; under ZeRO-3 the writing rank rebuilds the model on the CPU from the gathered weights and merges that copy
    (the live model stays partitioned and untouched)."""
    target = directory / "model"
    if is_partitioned(model):
        state = full_state_dict(model, write)
        if not write:
            return target
        model = _host_copy(model, base_model_dir, state)
    elif not write:
        return target
    merged = model.merge_and_unload() if hasattr(model, "peft_config") else model
    merged.save_pretrained(target)
    for name in PROCESSOR_FILES:
        source = Path(base_model_dir) / name
        if source.is_file():
            shutil.copy(source, target / name)
    return target


def _host_copy(model: torch.nn.Module, base_model_dir: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An unpartitioned copy of `model` (same class, same LoRA config) holding `state`."""
    import copy as copying

    from peft import get_peft_model

    dtype = next(iter(state.values())).dtype
    copy = type(unwrap(model)).from_pretrained(base_model_dir, dtype=dtype, use_safetensors=True)
    if hasattr(model, "peft_config"):
        with torch.random.fork_rng():  # LoRA's initial values are overwritten below; leave the global RNG alone
            copy = get_peft_model(copy, copying.deepcopy(model.peft_config[model.active_adapter]))
    copy.load_state_dict(state, strict=True)
    return copy


def write_trainer_state(directory: Path, state: dict) -> None:
    (directory / TRAINER_STATE).write_text(json.dumps(state, indent=2, default=str))


def read_trainer_state(directory: Path) -> dict:
    return json.loads((directory / TRAINER_STATE).read_text())

"""Checkpoint layout: safetensors for the trained weights, DeepSpeed's own state for exact resume.

    <checkpoint>/
        trainer_state.json        step, samples seen, the plan's seed and shape, the config
        projector.safetensors     projector + SP weights (keys of LlavaSPProjector)
        adapter/                  LoRA adapter (peft save_pretrained, safetensors) in LoRA finetuning
        language_model.safetensors   the LLM in full finetuning
        deepspeed/state/          optimizer / scheduler / trainable-parameter state of every rank (DeepSpeed format)
        model/                    final checkpoint only: a complete HF model dir (LoRA merged) + processor files
        probe.safetensors         final checkpoint only: one batch and the live model's logits on it
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipelines.train.model_setup import PROJECTOR_WEIGHTS, unwrap

TRAINER_STATE = "trainer_state.json"
PROBE = "probe.safetensors"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json",
                   "preprocessor_config.json", "chat_template.jinja", "chat_template.json", "tokenizer.model")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}


def save_trained_weights(model: torch.nn.Module, directory: Path, full_finetune: bool) -> None:
    """Rank 0: what this run trained, as safetensors."""
    base = unwrap(model)
    save_file(_contiguous(base.projector.state_dict()), str(directory / PROJECTOR_WEIGHTS))
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory / "adapter")  # only the adapter, safetensors
    elif full_finetune:
        save_file(_contiguous(base.model.language_model.state_dict()), str(directory / "language_model.safetensors"))


def save_probe(model: torch.nn.Module, batch: dict[str, torch.Tensor], directory: Path) -> None:
    """The live model's logits (eval mode) on one batch, with the batch: probe.safetensors."""
    inputs = {name: tensor for name, tensor in batch.items() if name != "labels"}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    model.train(was_training)
    save_file(_contiguous({**inputs, "logits": logits}), str(directory / PROBE))


def export_model(model: torch.nn.Module, base_model_dir: str, directory: Path) -> Path:
    """A complete model directory for serving and evaluation: LoRA merged, processor files copied."""
    target = directory / "model"
    merged = model.merge_and_unload() if hasattr(model, "peft_config") else model
    merged.save_pretrained(target)
    for name in PROCESSOR_FILES:
        source = Path(base_model_dir) / name
        if source.is_file():
            shutil.copy(source, target / name)
    return target


def write_trainer_state(directory: Path, state: dict) -> None:
    (directory / TRAINER_STATE).write_text(json.dumps(state, indent=2, default=str))


def read_trainer_state(directory: Path) -> dict:
    return json.loads((directory / TRAINER_STATE).read_text())

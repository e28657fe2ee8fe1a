"""The model of each stage: what is frozen, what is LoRA, which learning rate each parameter gets."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from pipelines.train.config import TrainConfig
from sp_core.modeling import LlavaSPForConditionalGeneration

PROJECTOR_WEIGHTS = "projector.safetensors"


def unwrap(model: torch.nn.Module) -> LlavaSPForConditionalGeneration:
    """The LlavaSP model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_projector_weights(model: LlavaSPForConditionalGeneration, path: Path) -> None:
    """Stage-1 projector/SP weights into a model; every key must match (a different variant is an error)."""
    state = load_file(str(path))
    missing, unexpected = model.projector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model's projector: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]} (was stage 1 trained with another sp_variant?)")


def build_stage_model(config: TrainConfig, model_dir: str, stage1_checkpoint: Path | None) -> torch.nn.Module:
    dtype = torch.bfloat16 if resolve_precision(config) == "bf16" else torch.float32
    model = LlavaSPForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    if stage1_checkpoint is not None:
        load_projector_weights(model, stage1_checkpoint / PROJECTOR_WEIGHTS)
    model.requires_grad_(False)
    if config.stage == "finetune" and config.full_finetune:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    elif config.stage == "finetune":
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.lora_target_modules, bias="none")
        model = get_peft_model(model, lora)  # freezes everything but the LoRA matrices
    unwrap(model).projector.requires_grad_(True)
    if config.gradient_checkpointing:
        unwrap(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        unwrap(model).enable_input_require_grads()
    return model


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Projector/SP at mm_projector_lr (if set), the rest at lr; no weight decay on biases and norms."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        projector = "multi_modal_projector" in name
        decay = parameter.ndim >= 2
        groups.setdefault((projector, decay), []).append(parameter)
    projector_lr = config.mm_projector_lr if config.mm_projector_lr is not None else config.lr
    return [
        {"params": params, "lr": projector_lr if projector else config.lr,
         "weight_decay": config.weight_decay if decay else 0.0, "name": f"{'projector' if projector else 'llm'}"
                                                                      f"{'' if decay else '_no_decay'}"}
        for (projector, decay), params in sorted(groups.items())
    ]


def resolve_precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16" if config.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"

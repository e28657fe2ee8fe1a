"""The model of each stage: what is frozen, what is LoRA, which learning rate each parameter gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from pipelines.train.config import TrainConfig
from sp_core.checkpoint_check import load_state_exactly
from sp_core.modeling import LlavaSPForConditionalGeneration

PROJECTOR_WEIGHTS = "projector.safetensors"
LANGUAGE_MODEL_WEIGHTS = "language_model.safetensors"  # in a stage-1 checkpoint only when pretrain_llm trained it
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def unwrap(model: torch.nn.Module) -> LlavaSPForConditionalGeneration:
    """The LlavaSP model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_projector_weights(model: LlavaSPForConditionalGeneration, path: Path) -> None:
    """Stage-1 projector/SP weights into a model; every key and shape must match (another variant is an error)."""
    load_state_exactly(model.projector, load_file(str(path)), str(path))


def load_language_model_weights(model: LlavaSPForConditionalGeneration, path: Path) -> None:
    """A stage-1 LLM (pretrain_llm) into a model: every LLM and output-head key, nothing else."""
    load_state_exactly(model, load_file(str(path)), str(path), only=("model.language_model.", "lm_head."))


def load_stage1_weights(model: LlavaSPForConditionalGeneration, checkpoint: Path) -> None:
    """What stage 1 trained: the projector/SP weights, and the whole LLM where it was trained too (pretrain_llm)."""
    load_projector_weights(model, checkpoint / PROJECTOR_WEIGHTS)
    if (checkpoint / LANGUAGE_MODEL_WEIGHTS).is_file():
        load_language_model_weights(model, checkpoint / LANGUAGE_MODEL_WEIGHTS)


def build_stage_model(config: TrainConfig, model_dir: str, stage1_checkpoint: Path | None,
                      precision: str) -> torch.nn.Module:
    dtype = PRECISION_DTYPES[precision]
    model = LlavaSPForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    if stage1_checkpoint is not None:
        load_stage1_weights(model, stage1_checkpoint)
    model.requires_grad_(False)
    if config.trains_llm:
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
    """bf16 / fp16 / fp32 for this process's hardware: called on the workers, where the GPUs are."""
    if config.precision != "auto":
        return config.precision
    if not (config.use_gpu and torch.cuda.is_available()):
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # fp16: V100, T4 and older


def deepspeed_precision(settings: dict[str, Any], precision: str) -> dict[str, Any]:
    """DeepSpeed's settings with bf16 / fp16 switched as `precision` says; fp16 with dynamic loss scaling
    (loss_scale 0), as the HF Trainer's "auto" fills it."""
    return {**settings, "bf16": {"enabled": precision == "bf16"},
            "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                     "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}}

"""TrainConfig: one schema for both stages; the defaults are the embedded tiny run, small enough for a laptop's CPUs.

The paper's settings (lr 1e-3 / global batch 256 for stage 1; LoRA r128 a256, lr 2e-4, mm_projector_lr 2e-5,
global batch 128 for stage 2; warmup 3 %, cosine, max length 2048) are in infra/configs/*-paper.yaml.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS
from sp_core.lora_targets import LANGUAGE_MODEL_LORA_TARGETS
from sp_core.sp_options import SP_VARIANTS

Stage = Literal["pretrain", "finetune"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
# The learning-rate schedules after the linear warmup, by transformers' names for them.
LR_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
ZeroStage = Literal[2, 3]  # infra/deepspeed/zero{stage}.json
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]  # Ray placement groups
ResumeMode = Literal["auto", "force"]


@dataclass(config=OPTIONS)
class TrainConfig:
    stage: Stage = "pretrain"
    """pretrain: the projector (and the LLM with pretrain_llm); finetune: LoRA or the full LLM, plus the projector"""
    model: str = ""
    """Base model: a model dir or hub id; "" = the embedded tiny model of `variant`."""
    variant: str = "cropping"
    """The embedded tiny model's SP variant (none, cropping, pooling or sliding_window) where model is ""; with a
    model of your own, a label in the run's default name."""
    init_from: str = ""
    """finetune: a stage-1 checkpoint dir, or "mlflow:<run_id>" of a stage-1 run; "" = the base model's projector."""
    data: str = ""
    """A preprocessed data set: its folder (holds shards/), or the name given at preprocessing (name=...); "" =
    preprocess the embedded synthetic set."""
    validation_data: str = ""
    """A data set (folder or name) whose mean token loss is logged as val_loss every eval_every steps."""
    eval_every: NonNegativeInt = 0
    """Optimizer steps between validations; 0 = once, at the end."""
    max_validation_rows: NonNegativeInt = 0
    """Validate on this many of its rows, the same ones each time (0: all)."""
    data_mix: dict[str, PositiveFloat] = field(default_factory=dict)
    """Instead of `data`, several data sets in one run: folder or name -> weight, the times each of its rows is seen
    per epoch (2: each row twice; 0.5: a seeded half of them, the same half every epoch)."""

    # optimisation
    epochs: PositiveInt = 1
    """Passes over the data."""
    max_steps: int = 0
    """Run exactly this many optimizer steps, over as many epochs as needed (0: run `epochs`)."""
    micro_batch_size: PositiveInt = 4
    """Rows per worker per forward pass."""
    gradient_accumulation_steps: PositiveInt = 1
    """Micro-batches per optimizer step; the global batch is micro_batch_size x this x num_workers."""
    lr: PositiveFloat = 1e-3
    """Peak learning rate (of the LLM's LoRA in finetune)."""
    mm_projector_lr: float | None = None
    """Learning rate of the projector and SP modules in finetune; null = lr (official LoRA script: 2e-5)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    """Share of the steps spent in the linear warmup, in [0, 1)."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """The schedule after the warmup: cosine (LLaVA's), linear (to 0) or constant."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    seed: int = 42
    """Seeds the data order, dropout and any newly initialised weights."""

    # pretrain
    pretrain_llm: bool = False
    """Also train the whole LLM on the captions. The paper keeps Vicuna frozen here; an LLM that starts from random
    weights (the embedded tiny one) must first learn to read image tokens, or stage 2 learns to ignore the image.
    Stage 2 (init_from this run) then starts from its LLM as well as its projector."""

    # finetune
    lora_r: int = 128
    """LoRA rank."""
    lora_alpha: int = 256
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: str = LANGUAGE_MODEL_LORA_TARGETS
    """Regex over module names: the modules that get LoRA adapters."""
    full_finetune: bool = False
    """Train the whole LLM instead of LoRA."""
    gradient_checkpointing: bool = False
    """Recompute the LLM's activations in the backward pass: less memory, about a third more compute."""

    # system
    precision: Precision = "auto"
    """auto = bf16 on a GPU that has it, fp16 (with dynamic loss scaling) on an older GPU, fp32 on CPU; resolved
    on the workers, where the hardware is known."""
    zero_stage: ZeroStage = 2
    """DeepSpeed ZeRO stage (infra/deepspeed/zero<stage>.json): 2 partitions optimizer state and gradients, 3 also
    the weights."""
    num_workers: PositiveInt = 2
    """Ray Train workers (one per GPU with use_gpu)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each worker."""
    torch_threads: PositiveInt = 1
    """Intra-op threads per CPU worker."""
    placement_strategy: PlacementStrategy = "PACK"
    """How the workers spread over nodes (Ray placement groups); STRICT_SPREAD: one worker per node."""

    # checkpoints and tracking
    checkpoint_every: PositiveInt = 20
    """Optimizer steps between checkpoints (a run also saves one at its end)."""
    keep_checkpoints: PositiveInt = 2
    """Checkpoints kept per run, the newest ones."""
    max_failures: int = 1
    """Worker failures survived per run (restart from the last checkpoint)."""
    storage_path: str = ""
    """Where runs and checkpoints go; "" = $LLAVA_SP_HOME/train (default ./runs/train)."""
    run_name: str = ""
    """"" = <stage>-<variant>-<hash of the settings that decide the result>: a changed setting is a new run."""
    resume: ResumeMode = "auto"
    """An existing run of this name is resumed only when its deciding settings are unchanged (auto); force resumes
    it anyway, from its last checkpoint."""
    resume_from: str = ""
    """Start from this checkpoint directory (a checkpoint_* of any run), as a resume does."""
    experiment: str = "llava-sp"
    """MLflow experiment of the run."""
    log_every: PositiveInt = 1
    """Optimizer steps between logged metrics."""

    def __post_init__(self) -> None:
        problems = []
        if self.stage == "pretrain" and (self.init_from or self.full_finetune):
            problems.append("init_from / full_finetune are finetune options; stage=pretrain trains the projector "
                            "(and the whole LLM with pretrain_llm=true)")
        if self.stage == "finetune" and self.pretrain_llm:
            problems.append("pretrain_llm is a pretrain option; stage=finetune trains the whole LLM with "
                            "full_finetune=true")
        if self.data and self.data_mix:
            problems.append("give data or data_mix, not both")
        if not self.model and self.variant not in SP_VARIANTS:
            problems.append(f"variant={self.variant!r}: the embedded tiny model is one of {', '.join(SP_VARIANTS)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def storage_root(self) -> Path:
        """Where this run's folder is: storage_path, else $LLAVA_SP_HOME/train (absolute)."""
        from pipelines.defaults import home

        return Path(self.storage_path).absolute() if self.storage_path else home() / "train"

    @property
    def trains_llm(self) -> bool:
        """The whole LLM (not LoRA) is trained in this stage."""
        return self.pretrain_llm if self.stage == "pretrain" else self.full_finetune

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.num_workers

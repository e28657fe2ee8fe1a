"""TrainConfig: one schema for both stages; the defaults are the embedded tiny run, small enough for a laptop's CPUs.

The paper's settings (lr 1e-3 / global batch 256 for stage 1; LoRA r128 a256, lr 2e-4, mm_projector_lr 2e-5,
global batch 128 for stage 2; warmup 3 %, cosine, max length 2048) are in infra/configs/*-paper.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sp_core.modeling import LANGUAGE_MODEL_LORA_TARGETS

STAGES = ("pretrain", "finetune")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# The learning-rate schedules after the linear warmup, by transformers' names for them.
LR_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
ZERO_STAGES = (2, 3)  # infra/deepspeed/zero{stage}.json
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement groups
RESUME_MODES = ("auto", "force")


@dataclass
class TrainConfig:
    stage: str = "pretrain"  # pretrain (projector, + LLM with pretrain_llm) | finetune (LoRA or full LLM + projector)
    model: str = ""  # base model dir or hub id; "" = the embedded tiny model of `variant`
    variant: str = "cropping"  # embedded tiny model only: none | cropping | pooling | sliding_window
    init_from: str = ""  # finetune: a stage-1 checkpoint dir, or "mlflow:<run_id>" of a stage-1 run
    # A preprocessed data set: its folder (holds shards/), or the name given at preprocessing (name=...); "" =
    # preprocess the embedded synthetic set.
    data: str = ""
    # A data set (folder or name) whose mean token loss is logged as val_loss every eval_every steps (0: at the end).
    validation_data: str = ""
    eval_every: int = 0
    max_validation_rows: int = 0  # validate on this many of its rows, the same ones each time (0: all)
    # Instead of `data`, several data sets in one run: folder or name -> weight, the times each of its rows is seen
    # per epoch (2: each row twice; 0.5: a seeded half of them, the same half every epoch).
    data_mix: dict[str, float] = field(default_factory=dict)

    # optimisation
    epochs: int = 1
    max_steps: int = 0  # run exactly this many optimizer steps, over as many epochs as needed (0: run `epochs`)
    micro_batch_size: int = 4  # per worker
    gradient_accumulation_steps: int = 1
    lr: float = 1e-3
    mm_projector_lr: float | None = None  # projector/SP learning rate in finetune (official LoRA script: 2e-5)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"  # after the warmup: cosine (LLaVA's) | linear (to 0) | constant
    max_grad_norm: float = 1.0
    seed: int = 42

    # pretrain
    # Also train the whole LLM on the captions. The paper keeps Vicuna frozen here; an LLM that starts from random
    # weights (the embedded tiny one) must first learn to read image tokens, or stage 2 learns to ignore the image.
    # Stage 2 (init_from this run) then starts from its LLM as well as its projector.
    pretrain_llm: bool = False

    # finetune
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: str = LANGUAGE_MODEL_LORA_TARGETS  # regex over module names
    full_finetune: bool = False  # train the whole LLM instead of LoRA
    gradient_checkpointing: bool = False

    # system
    # auto = bf16 on a GPU that has it, fp16 (with dynamic loss scaling) on an older GPU, fp32 on CPU
    precision: str = "auto"
    zero_stage: int = 2  # infra/deepspeed/zero{stage}.json: 2 (optimizer + gradients partitioned) or 3 (+ weights)
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    torch_threads: int = 1  # intra-op threads per CPU worker
    placement_strategy: str = "PACK"  # of the workers over nodes; STRICT_SPREAD: one worker per node

    # checkpoints and tracking
    checkpoint_every: int = 20  # optimizer steps
    keep_checkpoints: int = 2
    max_failures: int = 1  # worker failures survived per run (restart from the last checkpoint)
    storage_path: str = ""  # where runs and checkpoints go; "" = $LLAVA_SP_HOME/train (default ./runs/train)
    # "" = <stage>-<variant>-<hash of the settings that decide the result>: a changed setting is a new run.
    run_name: str = ""
    # An existing run of this name is resumed only when its deciding settings are unchanged (auto); force resumes
    # it anyway, from its last checkpoint.
    resume: str = "auto"
    resume_from: str = ""  # start from this checkpoint directory (a checkpoint_* of any run), as a resume does
    experiment: str = "llava-sp"
    log_every: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage={self.stage!r}; allowed: {', '.join(STAGES)}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"lr_scheduler={self.lr_scheduler!r}; allowed: {', '.join(LR_SCHEDULERS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision={self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.zero_stage not in ZERO_STAGES:
            problems.append(f"zero_stage={self.zero_stage}; allowed: {', '.join(map(str, ZERO_STAGES))}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            problems.append(f"placement_strategy={self.placement_strategy!r}; allowed: {', '.join(PLACEMENT_STRATEGIES)}")
        if self.stage == "pretrain" and (self.init_from or self.full_finetune):
            problems.append("init_from / full_finetune are finetune options; stage=pretrain trains the projector "
                            "(and the whole LLM with pretrain_llm=true)")
        if self.stage == "finetune" and self.pretrain_llm:
            problems.append("pretrain_llm is a pretrain option; stage=finetune trains the whole LLM with "
                            "full_finetune=true")
        for name in ("epochs", "micro_batch_size", "gradient_accumulation_steps", "num_workers", "checkpoint_every",
                     "keep_checkpoints", "log_every", "torch_threads"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("eval_every", "max_validation_rows"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.data and self.data_mix:
            problems.append("give data or data_mix, not both")
        for source, weight in self.data_mix.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                problems.append(f"data_mix: the weight of {source} must be a number > 0, got {weight!r}")
        if self.resume not in RESUME_MODES:
            problems.append(f"resume={self.resume!r}; allowed: {', '.join(RESUME_MODES)}")
        if self.lr <= 0:
            problems.append(f"lr={self.lr} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
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

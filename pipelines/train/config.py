"""TrainConfig: one schema for both stages; the defaults are the embedded tiny run that works on 2 CPUs.

The paper's settings (lr 1e-3 / global batch 256 for stage 1; LoRA r128 a256, lr 2e-4, mm_projector_lr 2e-5,
global batch 128 for stage 2; warmup 3 %, cosine, max length 2048) are in infra/configs/*-paper.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from sp_core.modeling import LANGUAGE_MODEL_LORA_TARGETS

STAGES = ("pretrain", "finetune")
PRECISIONS = ("auto", "bf16", "fp32")
ZERO_STAGES = (2, 3)  # infra/deepspeed/zero{stage}.json
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement groups


@dataclass
class TrainConfig:
    stage: str = "pretrain"  # pretrain (projector, + LLM with pretrain_llm) | finetune (LoRA or full LLM + projector)
    model: str = ""  # base model dir or hub id; "" = the embedded tiny model of `variant`
    variant: str = "cropping"  # embedded tiny model only: none | cropping | pooling | sliding_window
    init_from: str = ""  # finetune: a stage-1 checkpoint dir, or "mlflow:<run_id>" of a stage-1 run
    data: str = ""  # a preprocessed dataset dir (holds shards/); "" = preprocess the embedded synthetic set

    # optimisation
    epochs: int = 1
    max_steps: int = 0  # run exactly this many optimizer steps, over as many epochs as needed (0: run `epochs`)
    micro_batch_size: int = 4  # per worker
    gradient_accumulation_steps: int = 1
    lr: float = 1e-3
    mm_projector_lr: float | None = None  # projector/SP learning rate in finetune (official LoRA script: 2e-5)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
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
    precision: str = "auto"  # auto = bf16 on a GPU that has it, fp32 on CPU
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
    storage_path: str = "runs/train"
    run_name: str = ""  # default "<stage>-<variant>"
    experiment: str = "llava-sp"
    log_every: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage={self.stage!r}; allowed: {', '.join(STAGES)}")
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
        if self.lr <= 0:
            problems.append(f"lr={self.lr} must be positive")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def name(self) -> str:
        return self.run_name or f"{self.stage}-{self.variant}"

    @property
    def trains_llm(self) -> bool:
        """The whole LLM (not LoRA) is trained in this stage."""
        return self.pretrain_llm if self.stage == "pretrain" else self.full_finetune

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.num_workers

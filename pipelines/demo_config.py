"""DemoConfig: the demo's tiny models, how long each of them trains, and where the results go."""

from __future__ import annotations

from dataclasses import field

from pydantic import PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS, StrList
from pipelines.synthetic import SyntheticConfig
from sp_core.sp_options import SPDfiKernel, SPNumTokens

# The paper's Tab. 1 rows, as tiny models: (table name, sp_variant).
VARIANTS = (("llava-1.5", "none"), ("sp-cropping", "cropping"), ("sp-pooling", "pooling"))
SIDE_BY_SIDE_CPUS = 0.5  # Ray CPUs of each evaluation actor and the Serve replica, all running at once at the end


@dataclass(config=OPTIONS)
class DemoConfig:
    variants: StrList = field(default_factory=lambda: [name for name, _ in VARIANTS])
    """The Tab. 1 rows to train: llava-1.5, sp-cropping, sp-pooling."""
    image_size: int = 112
    """Image side in pixels: an 8 x 8 patch grid. At 336 px (24 x 24) the tiny models learn nothing in the demo's
    budget."""
    sp_num_tokens: SPNumTokens = 4  # the paper's 6 needs the 24 x 24 grid
    sp_dfi_kernel: SPDfiKernel = 4  # on the 8 x 8 grid
    train_images: PositiveInt = 4000
    """Images of the synthetic set's stage-1 captions and stage-2 conversations."""
    base_steps: PositiveInt = 2500
    """The paper starts every variant from Vicuna; the demo's stand-in is the tiny LLM (with the baseline's patch MLP)
    trained this many steps on the captions, once, and shared by all variants. A randomly initialised LLM does not
    learn to read image tokens within the budget otherwise."""
    base_lr: float = 3e-3
    """Learning rate of the shared base's training."""
    pretrain_steps: PositiveInt = 200
    """Stage 1 of each variant, as in the paper: the projector and SP modules on the captions, the LLM frozen."""
    pretrain_lr: float = 1e-3
    """Stage 1's learning rate."""
    finetune_steps: PositiveInt = 1000
    """Stage 2 of each variant: the conversations."""
    finetune_lr: float = 1e-3
    """Stage 2's learning rate (LLM and projector)."""
    full_finetune: bool = True
    """Train the whole tiny LLM in stage 2; false: LoRA as in the paper's script."""
    lora_r: int = 16
    """LoRA rank with full_finetune=false (the tiny LLM is 64 wide: the paper's 128 would be wider than the model)."""
    micro_batch_size: PositiveInt = 8
    """Rows per worker per forward pass."""
    num_workers: PositiveInt = 1
    """Ray Train workers per run. DeepSpeed's collectives cost more than these tiny steps, so each run has one and
    the variants train side by side; num_workers=2 parallel=false trains one run at a time on two."""
    parallel: bool = True
    """Train the variants side by side."""
    eval_questions: int = 0
    """Questions of the synthetic test split (0 = all)."""
    eval_max_new_tokens: int = 8
    """Answer length cap (the answers are one word)."""
    register_models: bool = True
    """Register each model in the MLflow Model Registry as llava-sp-demo-<variant>@demo."""
    serve_port: int = 8000
    """Port of the Serve endpoint the demo asks one question through."""
    experiment: str = "llava-sp-demo"
    """MLflow experiment of the demo's runs."""

    def __post_init__(self) -> None:
        known = [name for name, _ in VARIANTS]
        unknown = [name for name in self.variants if name not in known]
        if unknown or not self.variants:
            raise ValueError(f"variants={self.variants}; choose from {known}")

    @property
    def synthetic(self) -> SyntheticConfig:
        return SyntheticConfig(train_images=self.train_images)

    def model_options(self, variant: str) -> dict:
        """The tiny model of a variant at the demo's size (embedded_model_dir options)."""
        sp = {} if variant == "none" else {"sp_num_tokens": self.sp_num_tokens, "sp_dfi_kernel": self.sp_dfi_kernel}
        return {"image_size": self.image_size, **sp}

"""The embedded default: the tiny model and the synthetic spatial data set, built locally on first use.

Every job falls back to these when given no model / no data, so that a fresh machine runs the whole pipeline with
no download. LLAVA_SP_HOME (default ./runs) is where they are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.synthetic import SyntheticConfig, SyntheticDataset, generate_synthetic_dataset
from sp_core.tiny import save_tiny_model


def home() -> Path:
    return Path(os.environ.get("LLAVA_SP_HOME", "runs")).absolute()


def embedded_model_dir(variant: str = "cropping") -> Path:
    """A tiny random-weight LLaVA-SP model of this variant (saved once; seed 0, so always the same weights)."""
    directory = home() / "models" / f"tiny-{variant}"
    if not (directory / "config.json").is_file():
        save_tiny_model(directory, seed=0, sp_variant=variant)
    return directory


def embedded_dataset(config: SyntheticConfig | None = None) -> SyntheticDataset:
    return generate_synthetic_dataset(home() / "synthetic", config or SyntheticConfig())

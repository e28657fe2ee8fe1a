"""The embedded default: the tiny model and the synthetic spatial data set, built locally on first use.

Every job falls back to these when given no model / no data, so that a fresh machine runs the whole pipeline with
no download. LLAVA_SP_HOME (default ./runs) is where they are kept. Non-default sizes (the demo's 112 px models, its
4000-image data set) get folders of their own, named by what differs, so that no size overwrites another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipelines.synthetic import (
    SyntheticConfig,
    SyntheticDataset,
    generate_synthetic_dataset,
)
from sp_core.tiny import save_tiny_model


def home() -> Path:
    return Path(os.environ.get("LLAVA_SP_HOME", "runs")).absolute()


def embedded_model_dir(variant: str = "cropping", **options: Any) -> Path:
    """A tiny random-weight LLaVA-SP model of this variant (saved once; seed 0, so always the same weights).

    options go to save_tiny_model (image_size=112, sp_num_tokens=4, ...); the folder is tiny-<variant> followed by
    each option and its value, e.g. tiny-cropping-image_size112-sp_num_tokens4."""
    suffix = "".join(f"-{name}{value}" for name, value in sorted(options.items()))
    directory = home() / "models" / f"tiny-{variant}{suffix}"
    if not (directory / "config.json").is_file():
        save_tiny_model(directory, seed=0, sp_variant=variant, **options)
    return directory


def embedded_dataset(config: SyntheticConfig | None = None) -> SyntheticDataset:
    """The default synthetic set in <home>/synthetic; any other config in synthetic-<its fingerprint>."""
    config = config or SyntheticConfig()
    folder = "synthetic" if config == SyntheticConfig() else f"synthetic-{config.fingerprint()[:12]}"
    return generate_synthetic_dataset(home() / folder, config)

"""sp_core: the LLaVA-SP model in pure PyTorch + transformers (no Ray, no MLflow).

`import sp_core` is cheap (a job's configuration and --help load without torch): the model classes below load on
first use, and loading them registers model_type 'llava_sp' with the transformers Auto classes.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LlavaSPConfig": "sp_core.config",
    "LlavaSPConfigError": "sp_core.config",
    "LlavaSPForConditionalGeneration": "sp_core.modeling",
    "LlavaSPInputError": "sp_core.modeling",
    "LlavaSPModel": "sp_core.modeling",
    "LlavaSPProjector": "sp_core.projector",
    "LlavaSPProjectorOutput": "sp_core.projector",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # PEP 562: the module's attributes, imported when first asked for
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sp_core' has no attribute {name!r}")
    importlib.import_module("sp_core.modeling")  # registers the Auto classes, whichever class was asked for
    return getattr(importlib.import_module(_EXPORTS[name]), name)

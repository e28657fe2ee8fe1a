"""sp_core: the LLaVA-SP model in pure PyTorch + transformers (no Ray, no MLflow).

Importing sp_core registers the 'llava_sp' model type with the transformers Auto classes.
"""

from sp_core.config import LlavaSPConfig, LlavaSPConfigError
from sp_core.modeling import (
    LlavaSPForConditionalGeneration,
    LlavaSPInputError,
    LlavaSPModel,
    register_auto_classes,
)
from sp_core.projector import LlavaSPProjector, LlavaSPProjectorOutput

register_auto_classes()

__all__ = [
    "LlavaSPConfig",
    "LlavaSPConfigError",
    "LlavaSPForConditionalGeneration",
    "LlavaSPInputError",
    "LlavaSPModel",
    "LlavaSPProjector",
    "LlavaSPProjectorOutput",
]

"""Which modules of LLaVA-SP take LoRA adapters in stage 2. Plain strings, so that configs load without torch."""

from __future__ import annotations

# PEFT matches target_modules by name suffix, and CLIP has q_proj/v_proj too: anchor LoRA to the language model.
LANGUAGE_MODEL_LORA_TARGETS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)

"""Works around what moves between transformers 5.x releases, for the model forward: names, here only.

- The KV cache's keyword (and output field): 5.24+ calls it `cache` and warns on every call that still says
  `past_key_values` (removed in 5.40); earlier 5.x releases know only `past_key_values`.
- generate() encodes a request's images once, before prefill, and hands the encodings to forward as
  `mm_encoder_outputs` (5.x); the forward then gets no pixel_values, yet must count the images it fills in.

tests/sp_core/test_transformers_compat.py fails when transformers changes either under us.
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers import LlavaForConditionalGeneration

CACHE_KEYWORD = "cache" if "cache" in inspect.signature(LlavaForConditionalGeneration.forward).parameters \
    else "past_key_values"
ENCODED_INPUTS_KEYWORD = "mm_encoder_outputs"


def pre_encoded_images(forward_kwargs: dict[str, Any]) -> Any | None:
    """The image encodings generate() computed before prefill (their pooler_output: one tensor per image), or None."""
    return (forward_kwargs.get(ENCODED_INPUTS_KEYWORD) or {}).get("image")

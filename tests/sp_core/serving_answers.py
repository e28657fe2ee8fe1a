"""One check shared by the checkpoint tests: the generator behind Serve and batch evaluation, loaded from a model
directory, answers exactly as the model's own generate does on the same prompt and pixels."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams

NEW_TOKENS = 5


def assert_serves_like_generate(directory: Path, model, image: Image.Image, aspect: str = "pad") -> torch.Tensor:
    """Greedy tokens of LlavaSPGenerator equal `model.generate` token for token; returns the pixels it fed."""
    generator = LlavaSPGenerator.from_pretrained(directory, aspect=aspect, resize="pil")
    request = GenerationRequest(turns=["<image>\nWhat colour is the shape?"], images=[image],
                                sampling=SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True))
    prepared = generator.prepare(request)
    [result] = generator.generate([prepared])
    input_ids = torch.tensor([prepared.input_ids])
    with torch.no_grad():
        expected = model.generate(input_ids=input_ids, pixel_values=prepared.pixel_values, do_sample=False,
                                  max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    assert result.token_ids == expected[0, input_ids.shape[1]:].tolist()
    return prepared.pixel_values

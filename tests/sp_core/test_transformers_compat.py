"""sp_core.transformers_compat: the names transformers uses for the KV cache and for generate()'s pre-encoded
images. These fail when a transformers upgrade moves either, so that the one module that names them is updated."""

from __future__ import annotations

import inspect

import torch
from transformers import LlavaForConditionalGeneration
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast

from sp_core.loading import load_llava_sp
from sp_core.modeling import LlavaSPModel
from sp_core.transformers_compat import CACHE_KEYWORD, pre_encoded_images
from tests.sp_core.test_modeling import PROMPT, _image


def test_the_cache_keyword_is_the_forwards_argument_and_output_field():
    assert CACHE_KEYWORD in inspect.signature(LlavaForConditionalGeneration.forward).parameters
    assert CACHE_KEYWORD in LlavaCausalLMOutputWithPast.__dataclass_fields__


def test_generate_hands_the_forward_its_images_encoded_once(tiny_model_dir, monkeypatch):
    model, processor = load_llava_sp(tiny_model_dir)
    seen: list[tuple[bool, int | None]] = []
    forward = LlavaSPModel.forward

    def recording(self, input_ids=None, pixel_values=None, **kwargs):
        encoded = pre_encoded_images(kwargs)
        seen.append((pixel_values is not None, None if encoded is None else len(encoded.pooler_output)))
        return forward(self, input_ids=input_ids, pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(LlavaSPModel, "forward", recording)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    # Prefill gets the one image's encoding instead of its pixels; every call knows how many images it fills in.
    assert seen[0] == (False, 1)
    assert len(seen) == 3


def test_our_model_has_every_attribute_llava_models_init_sets():
    """LlavaSPModel builds itself instead of calling LlavaModel.__init__ (which would allocate the plain projector):
    when a transformers release gives LlavaModel.__init__ more to set up, this names what ours lacks."""
    from transformers import LlavaConfig, LlavaModel

    from sp_core.tiny import build_tiny_model

    ours = build_tiny_model()[0].model
    config = ours.config
    plain = LlavaModel(LlavaConfig(vision_config=config.vision_config, text_config=config.text_config,
                                   image_token_id=config.image_token_id))
    assert set(vars(plain)) - set(vars(ours)) == set()
    assert set(plain._modules) == set(ours._modules)
    assert type(ours.multi_modal_projector).__name__ == "LlavaSPProjector"

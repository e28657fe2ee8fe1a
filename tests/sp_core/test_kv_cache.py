"""The cache surgery of continuous batching, on transformers' own DynamicCache: fails when its layout changes."""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from sp_core.engine import left_pad
from sp_core.kv_cache import cache_layers, join_rows, keep_rows, trim_left
from sp_core.tiny import TINY_TEXT
from sp_core.transformers_compat import CACHE_KEYWORD


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, **TINY_TEXT)).eval()


def _prefill(model, prompts: list[list[int]]):
    ids, mask = left_pad(prompts, pad_id=0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return getattr(out, CACHE_KEYWORD), mask, positions[:, -1] + 1, out.logits[:, -1].argmax(-1)


def _step(model, cache, mask, positions, tokens):
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], use_cache=True,
                **{CACHE_KEYWORD: cache})
    return out.logits[:, -1], mask


@torch.inference_mode()
def test_dynamic_cache_layers_hold_batch_heads_length_head_dim_tensors():
    model = _model()
    cache, mask, _, _ = _prefill(model, [[5, 6, 7], [8, 9]])
    assert isinstance(cache, DynamicCache)
    heads, head_dim = TINY_TEXT["num_key_value_heads"], TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"]
    for layer in cache_layers(cache):
        assert layer.keys.shape == layer.values.shape == (2, heads, 3, head_dim)


@torch.inference_mode()
def test_joined_rows_decode_as_they_do_alone_and_trimming_keeps_that():
    model = _model()
    long_prompt, short_prompt = [list(range(3, 20))], [[21, 22, 23]]
    running, running_mask, running_positions, running_tokens = _prefill(model, long_prompt)
    joining, joining_mask, joining_positions, joining_tokens = _prefill(model, short_prompt)
    cache, mask = join_rows(running, running_mask, joining, joining_mask)
    assert mask.shape == (2, 17) and mask[1].tolist() == [0] * 14 + [1] * 3
    positions, tokens = torch.cat([running_positions, joining_positions]), torch.cat([running_tokens, joining_tokens])
    together, mask = _step(model, cache, mask, positions, tokens)
    for row, prompt in enumerate([long_prompt, short_prompt]):
        alone_cache, alone_mask, alone_positions, alone_tokens = _prefill(model, prompt)
        alone, _ = _step(model, alone_cache, alone_mask, alone_positions, alone_tokens)
        torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=1e-5)

    mask = keep_rows(cache, mask, [1])  # the long row leaves: 14 columns are padding for everyone left
    mask = trim_left(cache, mask)
    assert mask.shape == (1, 4) and cache.get_seq_length() == 4
    tokens = together[1:].argmax(-1)
    after_trim, _ = _step(model, cache, mask, positions[1:] + 1, tokens)
    alone_cache, alone_mask, alone_positions, alone_tokens = _prefill(model, short_prompt)
    _, alone_mask = _step(model, alone_cache, alone_mask, alone_positions, alone_tokens)
    alone, _ = _step(model, alone_cache, alone_mask, alone_positions + 1, tokens)
    torch.testing.assert_close(after_trim[0], alone[0], atol=1e-5, rtol=1e-5)

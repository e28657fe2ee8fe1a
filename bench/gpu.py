"""The paper's 7B architecture on one GPU, with random bf16 weights: decode speed and one LoRA training step.

    python bench/gpu.py                       # paper size on cuda: Vicuna-7B + CLIP-L/14-336, bf16
    python bench/gpu.py --size tiny --device cpu --decode-tokens 4 --train-batch 1   # the suite's smoke run

Needs only torch, transformers, peft and safetensors (what a bare GPU image has: no Ray, no DeepSpeed).
1. Decode tokens/s at batch 1 (one image, greedy, a fixed number of new tokens) of SP-Cropping and SP-Pooling
   against the LLaVA-1.5 baseline, and their ratios: the paper's Tab. 2 gives 0.988 and 0.977 on an A40
   (20.51 and 20.28 against 20.76 tokens/s).
2. One stage-2 step of SP-Cropping (LoRA r128/alpha 256 on the LLM, the projector trained, as the paper's recipe):
   tokens/s and MFU = 4 N T / (t peak), with N the LLM's parameters without embeddings, T the tokens of the step and
   4 N per token the forward plus the input gradients through the frozen weights (LoRA's own products are left out).
Timings are medians over repeats after one warm-up; prints a table and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a bare checkout

from sp_core.lora_targets import LANGUAGE_MODEL_LORA_TARGETS  # noqa: E402
from sp_core.modeling import LlavaSPForConditionalGeneration  # noqa: E402
from sp_core.paper import paper_config  # noqa: E402
from sp_core.tiny import build_tiny_tokenizer, tiny_config  # noqa: E402

VARIANTS = ("llava-1.5", "sp-cropping", "sp-pooling")
TINY_OPTIONS = {"llava-1.5": dict(sp_variant="none"), "sp-cropping": dict(sp_variant="cropping"),
                "sp-pooling": dict(sp_variant="pooling", sp_projector_bias=False)}
PAPER_TAB2_RATIOS = {"sp-cropping": 20.51 / 20.76, "sp-pooling": 20.28 / 20.76}
H100_BF16_DENSE_FLOPS = 989e12


def build_model(variant: str, size: str, device: torch.device, dtype: torch.dtype) -> LlavaSPForConditionalGeneration:
    config = paper_config(variant) if size == "paper" else tiny_config(build_tiny_tokenizer(), **TINY_OPTIONS[variant])
    torch.manual_seed(0)
    with torch.device(device):  # random weights initialised where they live: no 7B copy on the host
        model = LlavaSPForConditionalGeneration(config)
    return model.to(dtype).eval()


def image_chat(model: LlavaSPForConditionalGeneration, text_tokens: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """BOS, the image's placeholders, then `text_tokens` arbitrary text ids."""
    config, device = model.config, model.device
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, config.text_config.vocab_size, (batch, text_tokens), generator=generator)
    text[text == config.image_token_id] = 3
    placeholders = torch.full((batch, config.image_tokens_per_image), config.image_token_id)
    bos = torch.full((batch, 1), config.text_config.bos_token_id or 1)
    size = config.vision_config.image_size
    return {"input_ids": torch.cat([bos, placeholders, text], dim=1).to(device),
            "pixel_values": torch.randn(batch, 3, size, size, generator=generator).to(device, model.dtype)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def decode_tokens_per_second(model: LlavaSPForConditionalGeneration, new_tokens: int, repeats: int) -> float:
    inputs = image_chat(model, text_tokens=32)
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    times = []
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            _synchronize(model.device)
            start = time.perf_counter()
            model.generate(**inputs, **settings)
            _synchronize(model.device)
            if attempt:  # the first is the warm-up
                times.append(time.perf_counter() - start)
    return new_tokens / statistics.median(times)


def lora_step(model: LlavaSPForConditionalGeneration, batch: int, text_tokens: int, repeats: int) -> dict[str, float]:
    model.requires_grad_(False)
    peft_model = get_peft_model(model, LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05,
                                                  target_modules=LANGUAGE_MODEL_LORA_TARGETS))
    model.projector.requires_grad_(True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-4)
    inputs = image_chat(model, text_tokens=text_tokens, batch=batch)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    times = []
    for attempt in range(repeats + 1):
        _synchronize(model.device)
        start = time.perf_counter()
        loss = peft_model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(model.device)
        if attempt:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = inputs["input_ids"].numel()
    language_model = model.model.language_model
    llm_parameters = sum(p.numel() for p in language_model.parameters()) - language_model.embed_tokens.weight.numel()
    return {"step_seconds": seconds, "tokens_per_second": tokens / seconds, "tokens": tokens,
            "flops_per_second": 4 * llm_parameters * tokens / seconds, "loss": float(loss)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("paper", "tiny"), default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--decode-tokens", type=int, default=128, help="new tokens per decode run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    parser.add_argument("--train-batch", type=int, default=4, help="sequences in the training step")
    parser.add_argument("--train-text-tokens", type=int, default=512, help="text tokens per sequence beside the image")
    parser.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE_FLOPS, help="for MFU (H100 SXM: 989e12)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    report: dict = {"size": args.size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "dtype": args.dtype, "decode_tokens_per_second": {}}
    for variant in VARIANTS:
        model = build_model(variant, args.size, device, dtype)
        report["decode_tokens_per_second"][variant] = decode_tokens_per_second(model, args.decode_tokens, args.repeats)
        if variant == "sp-cropping":
            report["lora_step"] = lora_step(model, args.train_batch, args.train_text_tokens, args.repeats)
            report["lora_step"]["mfu"] = report["lora_step"]["flops_per_second"] / args.peak_flops
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    decode = report["decode_tokens_per_second"]
    report["decode_ratio_to_baseline"] = {variant: decode[variant] / decode["llava-1.5"] for variant in VARIANTS[1:]}
    print(f"{'variant':<12} {'decode tok/s':>12} {'ratio':>7} {'paper Tab. 2':>12}")
    for variant in VARIANTS:
        ratio = report["decode_ratio_to_baseline"].get(variant, 1.0)
        paper = PAPER_TAB2_RATIOS.get(variant, 1.0)
        print(f"{variant:<12} {decode[variant]:>12.2f} {ratio:>7.3f} {paper:>12.3f}")
    step = report["lora_step"]
    print(f"LoRA step (sp-cropping, {step['tokens']} tokens): {step['step_seconds']:.3f} s, "
          f"{step['tokens_per_second']:.0f} tokens/s, MFU {step['mfu']:.1%} of {args.peak_flops:.3g} FLOP/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

"""Smoke demo (until the whole-pipeline demo lands): build the tiny LLaVA-SP model, save it, load it back through
the same from_pretrained path real weights use, and answer a question about a generated image.

    python jobs/demo.py [--out runs/demo] [--variant cropping|pooling|sliding_window|none]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from sp_core.loading import load_llava_sp
from sp_core.tiny import save_tiny_model

PROMPT = "USER: <image>\nWhat colour is the shape? Answer the question using a single word or phrase. ASSISTANT:"


def shape_image() -> Image.Image:
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).ellipse((40, 40, 140, 140), fill="red")
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--variant", default="cropping")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model_dir = save_tiny_model(args.out / f"tiny-sp-{args.variant}", sp_variant=args.variant)
    model, processor = load_llava_sp(model_dir)
    inputs = processor(images=shape_image(), text=PROMPT, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8)
    answer = processor.decode(output[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    image_tokens = int((inputs.input_ids == model.config.image_token_id).sum())
    print(f"model:        {model_dir} ({sum(p.numel() for p in model.parameters()):,} random-weight parameters)")
    print(f"image tokens: {image_tokens} = {model.config.num_spatial_tokens} spatial + {model.config.grid_size ** 2} patch")
    print(f"answer:       {answer!r} (random weights: the words are noise until the model is trained)")
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

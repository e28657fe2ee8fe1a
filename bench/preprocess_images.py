"""Images/s per core: LlavaSPImageProcessor vs transformers' CLIPImageProcessorPil on the same decoded images.

    cd /work/main && .venv/bin/python -m bench.preprocess_images [--images 200] [--batch-size 32] [--repeats 3]

Both sides get the same already-decoded 640x480 RGB images (JPEG decoding is excluded from both: it is identical
work and would only dilute the ratio) and produce (N, 3, 336, 336) float32 tensors in batches of --batch-size.
"square" aspect on both, so the operations are the same. The two run interleaved, --repeats times, and the best
time of each counts, so a noisy neighbour slows both rather than one. Prints a benchmark, asserts nothing on time.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from sp_core.image_processing import LlavaSPImageProcessor  # noqa: E402
from sp_core.processing import clip_image_processor  # noqa: E402

IMAGE_SIZE = 336
WIDTH, HEIGHT = 640, 480


def make_decoded_jpegs(count: int, seed: int = 0) -> list[Image.Image]:
    """`count` photo-like 640x480 JPEGs (quality 90), encoded and decoded in memory."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
        smooth = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        smooth.save(buffer, "JPEG", quality=90)
        decoded = Image.open(io.BytesIO(buffer.getvalue()))
        decoded.load()
        images.append(decoded)
    return images


def in_batches(process: Callable[[list[Image.Image]], torch.Tensor], images: list[Image.Image], batch_size: int):
    """Run `process` over consecutive batches; returns the outputs and the wall time in seconds."""
    start = time.perf_counter()
    outputs = [process(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return outputs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="number of synthetic 640x480 JPEGs")
    parser.add_argument("--batch-size", type=int, default=32, help="images per processor call")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best time of each side counts")
    args = parser.parse_args()

    # Per-core numbers: data workers each get one core, and torch would otherwise spread normalize over all cores.
    torch.set_num_threads(1)
    images = make_decoded_jpegs(args.images)
    hf_processor = clip_image_processor(IMAGE_SIZE)
    ours = LlavaSPImageProcessor(image_size=IMAGE_SIZE, aspect="square")

    def run_hf(batch: list[Image.Image]) -> torch.Tensor:
        return hf_processor(batch, return_tensors="pt").pixel_values

    def run_resize_only(batch: list[Image.Image]) -> torch.Tensor:
        for image in batch:
            image.resize((448, 336), Image.Resampling.BICUBIC)
        return torch.empty(0)

    crops = np.stack([ours.to_uint8(image) for image in images])  # (N, S, S, 3), as read back from a shard
    best = {"hf": float("inf"), "ours": float("inf"), "to_uint8": float("inf"), "normalize": float("inf")}
    best["resize"] = float("inf")
    for _ in range(args.repeats):
        hf_outputs, seconds = in_batches(run_hf, images, args.batch_size)
        best["hf"] = min(best["hf"], seconds)
        our_outputs, seconds = in_batches(ours, images, args.batch_size)
        best["ours"] = min(best["ours"], seconds)
        _, seconds = in_batches(lambda batch: [ours.to_uint8(image) for image in batch], images, args.batch_size)
        best["to_uint8"] = min(best["to_uint8"], seconds)
        _, seconds = in_batches(ours.normalize, crops, args.batch_size)
        best["normalize"] = min(best["normalize"], seconds)
        _, seconds = in_batches(run_resize_only, images, args.batch_size)
        best["resize"] = min(best["resize"], seconds)

    max_diff = max((a - b).abs().max().item() for a, b in zip(our_outputs, hf_outputs, strict=True))
    rate = {name: args.images / seconds for name, seconds in best.items()}
    ours_rate, hf_rate = rate["ours"], rate["hf"]
    print(
        f"images: {args.images} x {WIDTH}x{HEIGHT} JPEG (decoded beforehand, decode excluded), batch "
        f"{args.batch_size}, best of {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    # Both sides run the same PIL bicubic resize (the parity requirement); it bounds the end-to-end ratio.
    print(
        f"shared PIL resize alone: {rate['resize']:.1f} img/s = {100 * best['resize'] / best['hf']:.0f}% of "
        f"CLIPImageProcessorPil's time, so the end-to-end ratio is at most {best['hf'] / best['resize']:.2f}"
    )
    print(
        f"split: to_uint8 (shard writing) {rate['to_uint8']:.1f} img/s, ratio {rate['to_uint8'] / hf_rate:.2f}; "
        f"normalize (train time, from stored crops) {rate['normalize']:.1f} img/s, "
        f"ratio {rate['normalize'] / hf_rate:.1f}"
    )
    print(
        f"preprocess: ours {ours_rate:.1f} img/s, CLIPImageProcessorPil {hf_rate:.1f} img/s, "
        f"ratio {ours_rate / hf_rate:.2f} (goal >= 2.0), max |diff| {max_diff:.4f}"
    )


if __name__ == "__main__":
    main()

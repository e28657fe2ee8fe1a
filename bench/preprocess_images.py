"""Images/s per core: LlavaSPImageProcessor vs transformers' CLIPImageProcessor on the same decoded images.

Without torchvision (as on these machines) transformers' CLIPImageProcessor falls back to CLIPImageProcessorPil,
which is what "hf" times here. Ours runs with each of its two resizes: "pil" (the default: Pillow's own resize,
bit-identical to CLIPImageProcessorPil) and "torch" (bit-identical to the torchvision-backed CLIPImageProcessor, 1-2
uint8 levels off the PIL one); the max |diff| of each against CLIPImageProcessorPil is printed (one uint8 level is
0.015 after normalisation).

    cd /work/main && .venv/bin/python -m bench.preprocess_images [--images 200] [--batch-size 32] [--repeats 5]

Both sides get the same already-decoded 640x480 RGB images (JPEG decoding is excluded from both: it is identical
work and would only dilute the ratio) and produce (N, 3, 336, 336) float32 pixel values in batches of --batch-size.
"square" aspect on both, so the operations are the same.

Timing: every contender runs on batch 1, then every contender on batch 2, and so on, --repeats times (the order of
the contenders reversed on every other round), and each contender's time is the sum over batches of its best time
on that batch; a burst from a noisy neighbour then costs one sample rather than a whole pass. Torch and numpy's BLAS
run on one thread: data workers each get one core (Ray sets OMP_NUM_THREADS to a task's CPUs, which both follow).

The printout splits the time per image: PIL's resize alone (the call inside CLIPImageProcessorPil and ours) and
torch's resize alone. Prints a benchmark, asserts nothing on time.
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

from sp_core.image_processing import LlavaSPImageProcessor, resize_bicubic
from sp_core.processing import clip_image_processor

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


def best_per_batch(
    contenders: dict[str, tuple[Callable, list]], repeats: int, keep: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, list]]:
    """Interleave the contenders batch by batch; returns each one's summed best-per-batch seconds, and the last
    outputs of the contenders named in `keep`."""
    names = list(contenders)
    batch_count = len(next(iter(contenders.values()))[1])
    best = {name: [float("inf")] * batch_count for name in names}
    outputs: dict[str, list] = {name: [None] * batch_count for name in keep}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for batch_index in range(batch_count):
            for name in order:
                process, batches = contenders[name]
                start = time.perf_counter()
                result = process(batches[batch_index])
                best[name][batch_index] = min(best[name][batch_index], time.perf_counter() - start)
                if name in keep:
                    outputs[name][batch_index] = result
                del result
    return {name: sum(times) for name, times in best.items()}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="number of synthetic 640x480 JPEGs")
    parser.add_argument("--batch-size", type=int, default=32, help="images per processor call")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best time per batch counts")
    args = parser.parse_args()

    # Per-core numbers: data workers each get one core, and torch would otherwise spread its ops over all cores.
    torch.set_num_threads(1)
    images = make_decoded_jpegs(args.images)
    hf_processor = clip_image_processor(IMAGE_SIZE)
    ours = LlavaSPImageProcessor(image_size=IMAGE_SIZE, aspect="square")  # the default resize, "pil"
    ours_torch = LlavaSPImageProcessor(image_size=IMAGE_SIZE, aspect="square", resize="torch")
    _, resized_size, _ = ours.geometry(images[0])  # every image is WIDTH x HEIGHT: one geometry for all

    def run_hf(batch: list[Image.Image]) -> torch.Tensor:
        return hf_processor(batch, return_tensors="pt").pixel_values

    def run_resize_only(batch: list[Image.Image]) -> None:
        for image in batch:
            image.resize(resized_size, Image.Resampling.BICUBIC)  # the very call inside CLIPImageProcessorPil

    def run_torch_resize_only(batch: list[Image.Image]) -> None:
        for image in batch:
            resize_bicubic(image, resized_size, "torch")

    def run_to_uint8(batch: list[Image.Image]) -> list[np.ndarray]:
        return [ours.to_uint8(image) for image in batch]

    image_batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    crops = np.stack([ours.to_uint8(image) for image in images])  # (N, S, S, 3), as read back from a shard
    crop_batches = [crops[i : i + args.batch_size] for i in range(0, len(crops), args.batch_size)]
    seconds, outputs = best_per_batch(
        {
            "hf": (run_hf, image_batches),
            "ours": (ours, image_batches),
            "ours_torch": (ours_torch, image_batches),
            "resize": (run_resize_only, image_batches),
            "torch_resize": (run_torch_resize_only, image_batches),
            "to_uint8": (run_to_uint8, image_batches),
            "normalize": (ours.normalize, crop_batches),
        },
        args.repeats,
        keep=("hf", "ours", "ours_torch"),
    )

    def max_diff_to_hf(name: str) -> float:
        pairs = zip(outputs[name], outputs["hf"], strict=True)
        return max((a - b).abs().max().item() for a, b in pairs)

    rate = {name: args.images / value for name, value in seconds.items()}
    ms = {name: 1000 * value / args.images for name, value in seconds.items()}
    print(
        f"images: {args.images} x {WIDTH}x{HEIGHT} JPEG (decoded beforehand, decode excluded), batch "
        f"{args.batch_size}, best per batch of {args.repeats} interleaved rounds, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"end-to-end: ours (resize='pil', the default) {rate['ours']:.1f} img/s, CLIPImageProcessorPil "
        f"{rate['hf']:.1f} img/s, ratio {seconds['hf'] / seconds['ours']:.2f}, max |diff| "
        f"{max_diff_to_hf('ours'):.1e} (goal <= 1e-2)"
    )
    print(
        f"            ours (resize='torch') {rate['ours_torch']:.1f} img/s, ratio "
        f"{seconds['hf'] / seconds['ours_torch']:.2f}, max |diff| {max_diff_to_hf('ours_torch'):.1e} "
        "(transformers' two CLIPImageProcessor backends differ as much)"
    )
    print(
        f"split per image: CLIPImageProcessorPil {ms['hf']:.2f} ms, of which PIL's resize {ms['resize']:.2f} ms; ours "
        f"(pil) {ms['ours']:.2f} ms, of which the same resize {ms['resize']:.2f} ms; "
        f"ours (torch) {ms['ours_torch']:.2f} ms, of which torch's resize {ms['torch_resize']:.2f} ms"
    )
    print(
        f"other paths: to_uint8 (shard writing, pil) {rate['to_uint8']:.1f} img/s, ratio "
        f"{seconds['hf'] / seconds['to_uint8']:.2f}; normalize (train time, from stored crops) "
        f"{rate['normalize']:.1f} img/s, ratio {seconds['hf'] / seconds['normalize']:.1f}"
    )


if __name__ == "__main__":
    main()

"""Ray Data preprocessing throughput with 1 vs 2 CPUs, side by side in one run.

    .venv/bin/python -m bench.preprocess_ray [--images 400] [--repeats 2]

Runs the real preprocessing (staging, decode, CLIP crop, tokenize, parquet write) of the synthetic stage-2 rows
on a local Ray started with num_cpus=1, then 2, alternating, best of --repeats each; prints rows/s and the ratio.
Each Ray session first preprocesses a small warm-up set so that worker start-up is not timed.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

from pipelines.data.config import PreprocessConfig
from pipelines.data.model_inputs import row_processor_for
from pipelines.data.preprocess import preprocess
from pipelines.synthetic import SyntheticConfig, generate_synthetic_dataset
from sp_core.tiny import save_tiny_model


def timed_run(config: PreprocessConfig, warmup: PreprocessConfig, num_cpus: int, output: Path) -> tuple[float, int]:
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        processor = row_processor_for(config, config.model)
        # Worker processes start and import torch/transformers once per Ray session: keep that out of the timing.
        preprocess(replace(warmup, output_dir=str(output / "warmup")), processor)
        started = time.perf_counter()
        result = preprocess(replace(config, output_dir=str(output)), processor)
        return time.perf_counter() - started, result.read
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    dataset = generate_synthetic_dataset(work / "synthetic", SyntheticConfig(train_images=args.images, test_images=10))
    model = save_tiny_model(work / "model", sp_variant="cropping")
    config = PreprocessConfig(data=[str(dataset.finetune_json)], image_root=str(dataset.root), model=str(model),
                              rows_per_chunk=100_000, blocks_per_chunk=8)
    small = generate_synthetic_dataset(work / "warmup", SyntheticConfig(seed=1, train_images=40, test_images=10))
    warmup = replace(config, data=[str(small.finetune_json)], image_root=str(small.root))
    best: dict[int, float] = {}
    rows = 0
    for repeat in range(args.repeats):
        for cpus in (1, 2):
            seconds, rows = timed_run(config, warmup, cpus, work / f"out-{cpus}-{repeat}")
            best[cpus] = min(best.get(cpus, float("inf")), seconds)
    one, two = rows / best[1], rows / best[2]
    print(f"preprocess_ray: {rows} rows; 1 CPU {one:.1f} rows/s, 2 CPUs {two:.1f} rows/s, ratio {two / one:.2f} "
          f"(ideal 2.0; best of {args.repeats})")


if __name__ == "__main__":
    main()

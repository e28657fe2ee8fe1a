"""Serving benchmarks: batching gain, SP decode speed vs the LLaVA-1.5 baseline, and a bounded load run.

    .venv/bin/python -m bench.serve [--clients 16] [--rounds 3] [--load-clients 32] [--load-seconds 60]

(1) requests/s of 16 concurrent clients against the same tiny model deployed twice, with max_batch_size 16 and
    with max_batch_size 1, interleaved rounds, best round counts; once with image chats, once text-only, each asking
    for --max-tokens (default 128, LLaVA's answer budget); requests join the running batch as they arrive
    (continuous batching). Beside it, the same ratio for the generator alone, without HTTP or Serve: the ceiling
    that the endpoint's batching can reach on this machine.
(2) decode tokens/s of SP-Cropping and SP-Pooling vs the baseline (sp_variant none) with the same LLM and vision
    weights, through sp_core's generator (the path Serve uses), one image, 64 tokens each (end of sequence
    ignored so every variant decodes the same number of tokens), interleaved, median of the repeats.
(3) --load-clients concurrent clients for --load-seconds on loopback against the batched app: errors and latency.
(4) the latency of a 4-token request sent 0.3 s after eight 256-token ones, against the same request alone.
(5) requests/s of --clients concurrent streamed requests against as many non-streamed ones, with the model's
    replicas taking HTTP themselves (one model: the default) and behind a separate ingress (several models).

Everything on a local Ray and the real HTTP endpoint on 127.0.0.1; the numbers print, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PORT = 18501
URL = f"http://127.0.0.1:{PORT}"


def log(message: str) -> None:
    print(f"[bench.serve] {message}", file=sys.stderr, flush=True)


def image_data_url(seed: int) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def decoded_image(seed: int) -> Image.Image:
    """The image that image_data_url(seed) carries, as the server decodes it."""
    return Image.open(io.BytesIO(base64.b64decode(image_data_url(seed).split(",", 1)[1]))).convert("RGB")


def chat_body(model: str, seed: int, max_tokens: int, with_image: bool = True) -> dict:
    content = [{"type": "text", "text": f"Where is the circle? ({seed})"}]
    if with_image:
        content.append({"type": "image_url", "image_url": {"url": image_data_url(seed)}})
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]}


async def burst(model: str, clients: int, max_tokens: int, with_image: bool) -> float:
    """`clients` requests at once; returns requests/s."""
    bodies = [chat_body(model, seed, max_tokens, with_image) for seed in range(clients)]
    async with httpx.AsyncClient(timeout=300) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.post(f"{URL}/v1/chat/completions", json=body) for body in bodies))
        elapsed = time.perf_counter() - started
    failed = [response.status_code for response in responses if response.status_code != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed: {failed[:5]}")
    return clients / elapsed


async def load_run(model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """Closed loop: each client sends its next request when the previous one is answered."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        request = 0
        while time.perf_counter() < deadline:
            body = chat_body(model, index * 1000 + request, max_tokens)
            started = time.perf_counter()
            try:
                response = await client.post(f"{URL}/v1/chat/completions", json=body)
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - started)
            request += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(index, client) for index in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "requests_per_s": len(latencies) / elapsed, "p50_s": latencies[len(latencies) // 2],
            "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


async def short_under_long(model: str, long_clients: int, long_tokens: int, delay_s: float) -> tuple[float, float]:
    """Latency of a short request (4 tokens) alone, and sent `delay_s` after `long_clients` long requests: with
    continuous batching it joins their running batch instead of waiting for it to finish. Best of 5 each: the
    latencies are milliseconds, and the best is the one least disturbed by whatever else the machine runs."""
    short = chat_body(model, 999, 4, with_image=False)
    async with httpx.AsyncClient(timeout=300) as client:

        async def timed() -> float:
            started = time.perf_counter()
            response = await client.post(f"{URL}/v1/chat/completions", json=short)
            response.raise_for_status()
            return time.perf_counter() - started

        alone = min([await timed() for _ in range(5)])
        under_load = []
        for _ in range(5):
            long_ones = [asyncio.ensure_future(client.post(f"{URL}/v1/chat/completions",
                                                           json=chat_body(model, seed, long_tokens, with_image=False)))
                         for seed in range(long_clients)]
            await asyncio.sleep(delay_s)
            under_load.append(await timed())
            await asyncio.gather(*long_ones)
    return alone, min(under_load)


async def streams_against_plain(model: str, clients: int, max_tokens: int) -> tuple[float, float]:
    """requests/s of `clients` concurrent streamed requests and of as many non-streamed ones (best of 3 each)."""
    async with httpx.AsyncClient(timeout=300) as client:

        async def streamed(seed: int) -> None:
            body = {**chat_body(model, seed, max_tokens, with_image=False), "stream": True}
            async with client.stream("POST", f"{URL}/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for _ in response.aiter_lines():
                    pass

        async def plain(seed: int) -> None:
            response = await client.post(f"{URL}/v1/chat/completions",
                                         json=chat_body(model, seed, max_tokens, with_image=False))
            response.raise_for_status()

        rates = {}
        for name, send in (("streamed", streamed), ("plain", plain)):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                await asyncio.gather(*(send(seed) for seed in range(clients)))
                best = min(best, time.perf_counter() - started)
            rates[name] = clients / best
    return rates["streamed"], rates["plain"]


def decode_speed(directories: dict[str, Path], repeats: int, new_tokens: int) -> dict[str, dict[str, float]]:
    """Per variant, one image chat: end-to-end tokens/s (prefill included) and decode-only tokens/s.

    Decode-only = (new_tokens - 1) / (time for new_tokens - time for 1 token): the steady generation rate, where
    the SP tokens only add 6 positions to the KV cache; end-to-end adds the prefill, where the SP modules run.
    Medians over the repeats, variants interleaved.
    """
    from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams

    generators = {name: LlavaSPGenerator.from_pretrained(path) for name, path in directories.items()}
    image = decoded_image(7)

    def request(tokens: int) -> GenerationRequest:
        return GenerationRequest(["<image>\nWhere is the circle?"], [image],
                                 SamplingParams(max_new_tokens=tokens, ignore_eos=True))

    def seconds(generator: LlavaSPGenerator, tokens: int) -> float:
        started = time.perf_counter()
        result = generator.generate([request(tokens)])[0]
        assert result.completion_tokens == tokens, result
        return time.perf_counter() - started

    full: dict[str, list[float]] = {name: [] for name in generators}
    first: dict[str, list[float]] = {name: [] for name in generators}
    for repeat in range(repeats + 1):
        for name, generator in generators.items():
            full_time, first_time = seconds(generator, new_tokens), seconds(generator, 1)
            if repeat:  # the first round warms up
                full[name].append(full_time)
                first[name].append(first_time)
    return {name: {"end_to_end": new_tokens / statistics.median(full[name]),
                   "decode": (new_tokens - 1) / (statistics.median(full[name]) - statistics.median(first[name]))}
            for name in generators}


def same_llm_models(root: Path) -> dict[str, Path]:
    """Baseline, SP-Cropping and SP-Pooling tiny models sharing the vision tower, patch MLP and LLM weights."""
    from sp_core.processing import build_llava_sp_processor
    from sp_core.tiny import build_tiny_model

    baseline, tokenizer = build_tiny_model(seed=0, sp_variant="none")
    shared = baseline.state_dict()
    directories = {}
    for name, variant in (("baseline", "none"), ("sp-cropping", "cropping"), ("sp-pooling", "pooling")):
        model, _ = build_tiny_model(seed=0, sp_variant=variant)
        missing = model.load_state_dict(shared, strict=False).missing_keys  # only the SP modules keep their own
        assert all("multi_modal_projector" in key for key in missing), missing
        directory = root / name
        model.save_pretrained(directory)
        build_llava_sp_processor(model.config, tokenizer).save_pretrained(directory)
        directories[name] = directory
    return directories


def in_process_batching(directory: Path, clients: int, max_tokens: int) -> dict[bool, float]:
    """The generator alone, no HTTP or Serve: `clients` requests in one batch vs one at a time, as a ratio of times
    (best of 2), with and without an image. The ceiling for (1): on CPU the 620-token image prefill and the
    attention over its KV cache grow with the batch, so image chats gain less from batching than text chats."""
    from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams

    generator = LlavaSPGenerator.from_pretrained(directory)
    images = [decoded_image(seed) for seed in range(clients)]
    ratios = {}
    for with_image in (True, False):
        requests = [GenerationRequest([("<image>\n" if with_image else "") + f"Where is the circle? ({seed})"],
                                      [images[seed]] if with_image else [],
                                      SamplingParams(max_new_tokens=max_tokens, ignore_eos=True))
                    for seed in range(clients)]
        batched = one_by_one = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            generator.generate(requests)
            batched = min(batched, time.perf_counter() - started)
            started = time.perf_counter()
            for request in requests:
                generator.generate([request])
            one_by_one = min(one_by_one, time.perf_counter() - started)
        ratios[with_image] = one_by_one / batched
    return ratios


def main() -> None:
    from pipelines.serve.config import ServeConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    # LLaVA's default answer budget (model_vqa_loader max_new_tokens); the random tiny model rarely stops earlier.
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--decode-repeats", type=int, default=9)
    parser.add_argument("--load-clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    from pipelines.serve.app import build_app
    from pipelines.serve.config import ModelSpec

    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    directories = same_llm_models(root)
    torch.set_num_threads(1)
    decode = decode_speed(directories, args.decode_repeats, args.decode_tokens)
    log(f"decode speeds measured: {decode}")
    ceiling = in_process_batching(directories["sp-cropping"], args.clients, args.max_tokens)
    log(f"in-process batching ratios (image, text): {ceiling}")

    # Logical CPUs: three apps (a model 1 each, the separate ingress 0.5) stay deployed while the rounds alternate.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    source = str(directories["sp-cropping"])
    for name, batch, separate in (("batched", args.clients, False), ("unbatched", 1, False),
                                  ("separate", args.clients, True)):
        config = ServeConfig(models=[ModelSpec(name=name, source=source)], max_batch_size=batch,
                             max_waiting=max(args.clients, args.load_clients), app_name=name, route_prefix="/",
                             port=PORT, separate_ingress=separate)
        serve.run(build_app(config), name=name, route_prefix=f"/{name}", blocking=False)

    global URL
    base = URL
    best: dict[tuple[str, bool], float] = {}
    for with_image in (True, False):
        rates: dict[str, list[float]] = {"batched": [], "unbatched": []}
        for _ in range(args.rounds + 1):
            for name, values in rates.items():
                URL = f"{base}/{name}"
                values.append(asyncio.run(burst(name, args.clients, args.max_tokens, with_image)))
        log(f"burst rounds (req/s), image={with_image}: {rates}")
        for name, values in rates.items():
            best[(name, with_image)] = max(values[1:])  # round 0 warms up
    URL = f"{base}/batched"
    latency = asyncio.run(short_under_long("batched", 8, 256, 0.3))
    log(f"short request alone / under eight long ones (s): {latency}")
    streams = asyncio.run(streams_against_plain("batched", args.clients, args.max_tokens))
    log(f"streamed / non-streamed req/s: {streams}")
    URL = f"{base}/separate"
    separate = asyncio.run(streams_against_plain("separate", args.clients, args.max_tokens))
    log(f"behind a separate ingress, streamed / non-streamed req/s: {separate}")
    URL = f"{base}/batched"
    load = asyncio.run(load_run("batched", args.load_clients, args.load_seconds, args.max_tokens))
    serve.shutdown()
    ray.shutdown()

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, tiny models (CLIP 336/14 hidden 32, Llama "
          "hidden 64), CPU fp32")
    for with_image, kind in ((True, "image chats"), (False, "text-only chats")):
        batched, unbatched = best[("batched", with_image)], best[("unbatched", with_image)]
        print(f"(1) {args.clients} concurrent {kind} x {args.max_tokens} tokens, best of {args.rounds}: batched "
              f"(max_batch_size {args.clients}, continuous) {batched:.1f} req/s, batch size 1 "
              f"{unbatched:.1f} req/s, ratio {batched / unbatched:.2f} (goal >= 4); the generator alone, without "
              f"HTTP: {ceiling[with_image]:.2f}")
    for kind in ("decode", "end_to_end"):
        rates = {name: speeds[kind] for name, speeds in decode.items()}
        label = "decode-only" if kind == "decode" else "end-to-end (prefill included)"
        print(f"(2) {label} tokens/s, one image chat, {args.decode_tokens} tokens, median of {args.decode_repeats}: "
              + ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
              + f"; ratios vs baseline: SP-Cropping {rates['sp-cropping'] / rates['baseline']:.3f}, "
              f"SP-Pooling {rates['sp-pooling'] / rates['baseline']:.3f} (paper Tab. 2: 0.988 / 0.977; goal >= 0.99)")
    print(f"(4) a 4-token request sent 0.3 s after eight 256-token requests: {latency[1] * 1000:.0f} ms, alone "
          f"{latency[0] * 1000:.0f} ms, ratio {latency[1] / latency[0]:.2f} (goal <= 1.5)")
    print(f"(5) {args.clients} concurrent streamed text chats x {args.max_tokens} tokens {streams[0]:.1f} req/s, "
          f"non-streamed {streams[1]:.1f} req/s, ratio {streams[0] / streams[1]:.2f} (goal >= 0.9); behind a "
          f"separate ingress {separate[0]:.1f} / {separate[1]:.1f} req/s, ratio {separate[0] / separate[1]:.2f}")
    print(f"(3) load: {args.load_clients} clients x {args.load_seconds:.0f} s: {load['requests']} requests, "
          f"{load['errors']} errors {load['error_kinds'] or ''}, {load['requests_per_s']:.1f} req/s, "
          f"p50 {load['p50_s'] * 1000:.0f} ms, p99 {load['p99_s'] * 1000:.0f} ms (goal: 0 errors)")


if __name__ == "__main__":
    main()

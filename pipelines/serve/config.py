"""ServeConfig: what `jobs/serve.py` and `build_app` take; the defaults serve the embedded tiny model on 127.0.0.1.

Every field is plain data, so the same dict works as `serve run` / RayService application args.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sp_core.image_decoding import DEFAULT_DECODING, DEFAULT_MAX_PIXELS
from sp_core.image_processing import (
    DEFAULT_ASPECT,
    DEFAULT_RESIZE,
    image_option_problems,
)


@dataclass
class ModelSpec:
    name: str = "llava-sp-cropping"  # what clients put in "model"
    # A model dir (config.json + safetensors), "mlflow:<run_id>" of a training run (its checkpoint/model), or an
    # MLflow URI (runs:/..., models:/name@alias); "" = the embedded tiny model of `variant`.
    source: str = ""
    variant: str = "cropping"  # embedded tiny model only
    num_replicas: int | str = 1  # or "auto" for autoscaling
    min_replicas: int = 1  # autoscaling bounds (num_replicas="auto")
    max_replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    dtype: str = "auto"  # auto = bfloat16 on a GPU, float32 on CPU; or float32 | bfloat16 | float16


@dataclass
class ServeConfig:
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec()])
    host: str = "127.0.0.1"  # loopback unless told: the endpoint has no TLS
    port: int = 8000
    app_name: str = "llava-sp"
    ingress_cpus: float = 0.5  # the HTTP ingress (validation, image decoding); model replicas are in ModelSpec
    route_prefix: str = "/"

    # Continuous batching, per replica: up to max_batch_size requests decode together, new ones joining between
    # decode steps; at most max_prefill_tokens prompt tokens are prefilled per step (so a burst of long prompts
    # does not stall the running decodes); beyond max_waiting queued requests a replica answers 429.
    max_batch_size: int = 8
    max_prefill_tokens: int = 8192
    max_waiting: int = 64
    # A stream sends its text at most this often, all that was decoded meanwhile in one chunk (0: every token);
    # 50 ms is also Ray Serve LLM's default (stream_batching_interval_ms).
    stream_interval_s: float = 0.05

    # Request limits (bad requests get 4xx, never a crash)
    max_tokens_limit: int = 1024  # the largest max_tokens a client may ask for
    default_max_tokens: int = 128  # LLaVA's model_vqa_loader default
    max_images_per_request: int = 1  # LLaVA-1.5's template has one image per chat
    max_image_bytes: int = 20 * 1024 * 1024  # encoded size of one image
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # width x height, checked before decoding (decompression bombs)
    max_request_bytes: int = 64 * 1024 * 1024
    allow_remote_images: bool = False  # fetch http(s) image URLs; off: only data: URLs
    remote_image_timeout_s: float = 10.0
    image_aspect: str = DEFAULT_ASPECT  # as in training: pad (LLaVA-1.5) | square
    image_resize: str = DEFAULT_RESIZE  # as in training: torch | pil (see PreprocessConfig)
    image_decoding: str = DEFAULT_DECODING  # as in training: llava | display (see PreprocessConfig)

    # Authentication: clients send "Authorization: Bearer <key>". The key comes from a file (e.g. a mounted
    # Kubernetes secret) or else from the environment variable named here; neither set = no key required.
    api_key_file: str = ""
    api_key_env: str = "LLAVA_SP_API_KEY"

    def __post_init__(self) -> None:
        self.models = [model if isinstance(model, ModelSpec) else ModelSpec(**model) for model in self.models]
        problems = []
        names = [model.name for model in self.models]
        if not names:
            problems.append("models must list at least one model")
        if len(set(names)) != len(names):
            problems.append(f"model names must be unique, got {names}")
        for model in self.models:
            if not (model.num_replicas == "auto" or (isinstance(model.num_replicas, int) and model.num_replicas >= 1)):
                problems.append(f"model {model.name}: num_replicas must be >= 1 or 'auto', got {model.num_replicas!r}")
            if model.dtype not in ("auto", "float32", "bfloat16", "float16"):
                problems.append(f"model {model.name}: dtype={model.dtype!r}; allowed: auto, float32, bfloat16, float16")
        for name in ("max_batch_size", "max_prefill_tokens", "max_waiting", "max_tokens_limit", "default_max_tokens",
                     "max_images_per_request", "max_image_bytes", "max_image_pixels", "max_request_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.stream_interval_s < 0:
            problems.append(f"stream_interval_s={self.stream_interval_s} must be >= 0")
        if self.default_max_tokens > self.max_tokens_limit:
            problems.append(f"default_max_tokens={self.default_max_tokens} is over max_tokens_limit={self.max_tokens_limit}")
        problems.extend(image_option_problems(self.image_aspect, self.image_resize, self.image_decoding))
        if problems:
            raise ValueError("; ".join(problems))

    def api_key(self) -> str | None:
        if self.api_key_file:
            key = Path(self.api_key_file).read_text().strip()
            if not key:
                raise ValueError(f"api_key_file={self.api_key_file} is empty")
            return key
        return os.environ.get(self.api_key_env) or None

"""ServeConfig: what `jobs/serve.py` and `build_app` take; the defaults serve the embedded tiny model on 127.0.0.1.

Every field is plain data, so the same dict works as `serve run` / RayService application args.
"""

from __future__ import annotations

import os
from dataclasses import field
from pathlib import Path
from typing import Literal

from pydantic import NonNegativeFloat, PositiveInt
from pydantic.dataclasses import dataclass

from pipelines.config import OPTIONS
from sp_core.image_options import (
    DEFAULT_ASPECT,
    DEFAULT_DECODING,
    DEFAULT_MAX_PIXELS,
    DEFAULT_RESIZE,
    ImageAspectOption,
    ImageDecodingOption,
    ImageResizeOption,
)


@dataclass(config=OPTIONS)
class ModelSpec:
    name: str = "llava-sp-cropping"
    """The name clients put in "model"."""
    source: str = ""
    """A model dir (config.json + safetensors), "mlflow:<run_id>" of a training run (its checkpoint/model), or an
    MLflow URI (runs:/..., models:/name@alias); "" = the embedded tiny model of `variant`."""
    variant: str = "cropping"
    """The embedded tiny model's SP variant (only where source is "")."""
    num_replicas: int | Literal["auto"] = 1
    """Replicas of the model, or "auto" for autoscaling between min_replicas and max_replicas."""
    min_replicas: int = 1
    """Autoscaling's lower bound (num_replicas="auto")."""
    max_replicas: int = 2
    """Autoscaling's upper bound (num_replicas="auto")."""
    cpus_per_replica: float = 1.0
    """CPUs Ray reserves for each replica."""
    gpus_per_replica: float = 0.0
    """GPUs per replica (fractions share one)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The weights' dtype; auto = bfloat16 on a GPU, float32 on CPU."""


@dataclass(config=OPTIONS)
class ServeConfig:
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec()])
    """The models served, each by its name."""
    host: str = "127.0.0.1"
    """The HTTP address; loopback unless told, as the endpoint has no TLS."""
    port: int = 8000
    """The HTTP port."""
    app_name: str = "llava-sp"
    """The Serve application's name."""
    separate_ingress: bool = False
    """Take HTTP requests (validation, image decoding) in a deployment of their own, in front of the model
    deployments. Several models always have one, routing by "model"; one model is otherwise served by its own
    replicas, one Ray hop less per request and per streamed piece."""
    ingress_cpus: float = 0.5
    """CPUs of the separate ingress; the model replicas' are in models.N."""
    route_prefix: str = "/"
    """The URL path the OpenAI routes hang under."""

    # Continuous batching, per replica: new requests join the running batch between decode steps.
    max_batch_size: PositiveInt = 8
    """Requests that decode together in a replica."""
    max_prefill_tokens: PositiveInt = 8192
    """Prompt tokens prefilled per decode step, so that a burst of long prompts does not stall running decodes."""
    max_waiting: PositiveInt = 64
    """Queued requests per replica beyond which it answers 429 with Retry-After."""
    stream_interval_s: NonNegativeFloat = 0.05
    """A stream sends its text at most this often, all that was decoded meanwhile in one chunk (0: every token)."""

    # Request limits: a request over them gets a 4xx, and fails alone.
    max_tokens_limit: PositiveInt = 1024
    """The largest max_tokens a client may ask for."""
    default_max_tokens: PositiveInt = 128
    """max_tokens where a request sets none (LLaVA's model_vqa_loader default)."""
    max_images_per_request: PositiveInt = 1
    """Images per chat (LLaVA-1.5's template has one)."""
    max_image_bytes: PositiveInt = 20 * 1024 * 1024
    """The encoded size of one image."""
    max_image_pixels: PositiveInt = DEFAULT_MAX_PIXELS
    """Width x height, checked before decoding (decompression bombs)."""
    max_request_bytes: PositiveInt = 64 * 1024 * 1024
    """A request body's size, checked while it streams in."""
    allow_remote_images: bool = False
    """Fetch http(s) image URLs (never private addresses); off: only data: URLs."""
    remote_image_timeout_s: float = 10.0
    """Seconds to fetch one remote image."""
    image_aspect: ImageAspectOption = DEFAULT_ASPECT
    image_resize: ImageResizeOption = DEFAULT_RESIZE
    image_decoding: ImageDecodingOption = DEFAULT_DECODING

    # Authentication: clients send "Authorization: Bearer <key>".
    api_key_file: str = ""
    """Read the key from this file (e.g. a mounted Kubernetes secret)."""
    api_key_env: str = "LLAVA_SP_API_KEY"
    """Else read it from this environment variable; neither set = no key required."""

    detach: bool = False
    """jobs/serve.py: deploy and return, leaving the app running (needs a cluster that outlives the job: RAY_ADDRESS)."""

    def __post_init__(self) -> None:
        problems = []
        names = [model.name for model in self.models]
        if not names:
            problems.append("models must list at least one model")
        if len(set(names)) != len(names):
            problems.append(f"model names must be unique, got {names}")
        for model in self.models:
            if not (model.num_replicas == "auto" or (isinstance(model.num_replicas, int) and model.num_replicas >= 1)):
                problems.append(f"model {model.name}: num_replicas must be >= 1 or 'auto', got {model.num_replicas!r}")
        if self.default_max_tokens > self.max_tokens_limit:
            problems.append(f"default_max_tokens={self.default_max_tokens} is over max_tokens_limit={self.max_tokens_limit}")
        if problems:
            raise ValueError("; ".join(problems))

    def api_key(self) -> str | None:
        if self.api_key_file:
            key = Path(self.api_key_file).read_text().strip()
            if not key:
                raise ValueError(f"api_key_file={self.api_key_file} is empty")
            return key
        return os.environ.get(self.api_key_env) or None

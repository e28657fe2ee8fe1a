"""The Ray Serve application: an OpenAI-compatible chat endpoint over one or more LLaVA-SP models.

    python jobs/serve.py                      # the embedded tiny model on http://127.0.0.1:8000
    serve run pipelines.serve.app:build_app   # the same app from Serve's CLI (args: a ServeConfig dict)

Two parts:

- `ModelServer`, one per served model: holds an `LlavaSPGenerator` and its continuous-batching engine
  (sp_core/engine.py): requests, streamed or not, join the running batch between decode steps and leave it when
  done or when their client goes away; a full replica answers 429.
- `LlavaSPIngress`, the FastAPI ingress: authentication, request validation and image decoding (every client
  mistake is a 4xx OpenAI-style error before any model work), routing by the "model" field, SSE streaming.

With one model the ingress holds its ModelServer in the same replica: a request and each streamed piece cross no
Ray hop between them (as Ray Serve LLM's direct streaming). With several models, or `separate_ingress`, each
ModelServer is a deployment of its own (its replicas, its autoscaling) behind one ingress deployment.

Routes: POST /v1/chat/completions, GET /v1/models, GET /healthz.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures (Request) at runtime.

import asyncio
import dataclasses
import hmac
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types import Model
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from PIL import Image
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.model_source import resolve_model_dir
from pipelines.serve.config import ModelSpec, ServeConfig
from pipelines.serve.images import decode_image_url
from pipelines.serve.inbox import EventInbox
from pipelines.serve.metrics import ReplicaMetrics
from pipelines.serve.protocol import (
    APIError,
    ChatCall,
    ChatLimits,
    bad_request,
    chunk_body,
    completion_body,
    parse_chat_request,
    sse,
)
from sp_core.engine import (
    DONE,
    TEXT,
    EngineEvent,
    EngineFullError,
    EngineLimits,
    EngineRequest,
    GenerationEngine,
)
from sp_core.inference import (
    PROMPT_TOO_LONG,
    GenerationInputError,
    GenerationRequest,
    GenerationResult,
    LlavaSPGenerator,
    PreparedRequest,
    SamplingParams,
)

# Serve's own logger: its records go to the replica's log file under logs/serve/, tagged with the request id.
logger = logging.getLogger("ray.serve")

ERROR_KEY = "error"  # of the dict by which the model server reports a refused or failed request
OVERLOADED = "overloaded"  # the replica's queue is full: 429 with Retry-After
GENERATION_FAILED = "generation_failed"  # this request's own generation failed; its batch-mates went on
RETRY_AFTER_S = 1
JSON_CONTENT_TYPE = "application/json"


@dataclasses.dataclass
class StreamPiece:
    """What a streamed request sends from the model server to the ingress: the text decoded since the last piece,
    and on the last piece the request's end (its GenerationResult, or the error dict of its refusal or failure)."""

    text: str
    end: GenerationResult | dict[str, Any] | None = None


class ModelServer:
    """One model: prepares requests and hands them to its continuous-batching engine, which decodes them in a
    thread of its own while this replica's event loop keeps taking requests."""

    def __init__(self, spec: dict[str, Any], config: dict[str, Any]):
        self.spec = ModelSpec(**spec)
        serving = ServeConfig(**config)
        directory = resolve_model_dir(self.spec.source, self.spec.variant, f"model {self.spec.name}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.generator = LlavaSPGenerator.from_pretrained(
            directory, dtype=_dtype(self.spec.dtype, device), device=device, aspect=serving.image_aspect,
            max_images=serving.max_images_per_request, resize=serving.image_resize)
        self.engine = GenerationEngine(self.generator, EngineLimits(
            max_running=serving.max_batch_size, max_prefill_tokens=serving.max_prefill_tokens,
            max_waiting=serving.max_waiting))
        self.engine.start()
        self.metrics = ReplicaMetrics(self.spec.name, serve.get_replica_context().app_name)
        self.stream_interval_s = serving.stream_interval_s
        logger.info("serving %s from %s on %s", self.spec.name, directory, device)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    def _prepare(self, turns: list[str], images: list[Image.Image], sampling: SamplingParams,
                 system: str | None) -> PreparedRequest | dict[str, Any]:
        try:
            return self.generator.prepare(GenerationRequest(turns, images, sampling, system))
        except GenerationInputError as error:
            return _refusal(error.reason, str(error))

    async def _submit(self, turns: list[str], images: list[Image.Image], sampling: SamplingParams,
                      system: str | None, request_id: str, streams: bool
                      ) -> tuple[EngineRequest, EventInbox] | dict[str, Any]:
        """The request in the engine and the inbox its events arrive in, or the error dict of a refusal."""
        # Tokenising and image preprocessing off the event loop, so other requests keep being accepted.
        prepared = await asyncio.to_thread(self._prepare, turns, images, sampling, system)
        if isinstance(prepared, dict):
            self.metrics.outcome("refused")
            return prepared
        inbox = EventInbox(asyncio.get_running_loop())
        try:
            request = self.engine.submit(prepared, inbox.put, streams=streams)
        except EngineFullError as error:
            self.metrics.outcome(OVERLOADED)
            logger.warning("request %s refused: %s", request_id, error)
            return _refusal(OVERLOADED, str(error))
        self.metrics.load(*self.engine.load)
        return request, inbox

    async def stream(self, turns: list[str], images: list[Image.Image], sampling: SamplingParams, system: str | None,
                     request_id: str = "") -> AsyncIterator[StreamPiece]:
        """The text as the engine decodes it, in pieces, the last one with the request's end; leaving early (the
        client went away) takes the request out of the batch."""
        submitted = await self._submit(turns, images, sampling, system, request_id, streams=True)
        if isinstance(submitted, dict):
            yield StreamPiece("", submitted)
            return
        request, inbox = submitted
        try:
            # Text goes out at most every stream_interval_s, all that was decoded meanwhile in one piece: each piece
            # is a message through Serve's proxy, and one per token per stream would cost more than the decoding of
            # a small model. The first piece goes out at once, and so does the end.
            hold_s = 0.0
            while True:
                events = await inbox.take(hold_s)
                text = "".join(event.text for event in events if event.kind == TEXT)
                if events[-1].kind != TEXT:
                    yield StreamPiece(text, self._end(request, request_id, events[-1]))
                    return
                yield StreamPiece(text)
                hold_s = self.stream_interval_s
        finally:
            self._leave_if_unfinished(request, request_id)

    async def chat(self, turns: list[str], images: list[Image.Image], sampling: SamplingParams,
                   system: str | None, request_id: str = "") -> GenerationResult | dict[str, Any]:
        """The GenerationResult (or one error dict)."""
        submitted = await self._submit(turns, images, sampling, system, request_id, streams=False)
        if isinstance(submitted, dict):
            return submitted
        request, inbox = submitted
        try:
            return self._end(request, request_id, (await inbox.take())[-1])
        finally:
            self._leave_if_unfinished(request, request_id)

    def _end(self, request: EngineRequest, request_id: str, event: EngineEvent) -> GenerationResult | dict[str, Any]:
        """What the client gets for the request's last event: its result, or the error dict of its failure."""
        if event.kind == DONE:
            self._finished(request, request_id, event.result.finish_reason, event.result.completion_tokens)
            return event.result
        self._finished(request, request_id, "error", request.row.generated, event.text)
        return _refusal(GENERATION_FAILED, event.text)

    def _leave_if_unfinished(self, request: EngineRequest, request_id: str) -> None:
        if not request.finished:  # the client went away: the request leaves the batch at the next step
            request.cancel()
            self._finished(request, request_id, "cancelled", request.row.generated)

    def _finished(self, request: EngineRequest, request_id: str, outcome: str, completion_tokens: int,
                  problem: str = "") -> None:
        self.metrics.finished(request, outcome, completion_tokens)
        self.metrics.load(*self.engine.load)
        log = logger.warning if problem else logger.info
        log("request %s: %s after %d tokens%s", request_id, outcome, completion_tokens,
            f" ({problem})" if problem else "")

    def stats(self) -> dict[str, Any]:
        running, waiting = self.engine.load
        return {**dataclasses.asdict(self.generator.stats), "running": running, "waiting": waiting,
                **self.metrics.summary()}


# The deployment of a model served behind a separate ingress.
ModelDeployment = serve.deployment(health_check_period_s=5, health_check_timeout_s=30,
                                   max_ongoing_requests=256)(ModelServer)


def _refusal(reason: str, message: str) -> dict[str, Any]:
    """How the model server reports a refused or failed request to the ingress: a value, so that the reason
    survives the trip through Ray unchanged."""
    return {ERROR_KEY: {"reason": reason, "message": message}}


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


# ----------------------------------------------------------------------------------------------------------------
# Ingress

api = FastAPI(title="LLaVA-SP", description="OpenAI-compatible chat completions over LLaVA-SP models")


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


@api.exception_handler(APIError)
async def _api_error(request: Request, error: APIError) -> JSONResponse:
    return _error_response(error)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return _error_response(APIError(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return _error_response(bad_request(f"invalid request: {error.errors()}", "invalid_request"))


def _refusal_error(answer: Any, request_id: str) -> APIError | None:
    """The API error of a refused or failed request (None for an answer)."""
    if not (isinstance(answer, dict) and ERROR_KEY in answer):
        return None
    reason, message = answer[ERROR_KEY]["reason"], answer[ERROR_KEY]["message"]
    if reason == OVERLOADED:
        return APIError(429, f"the model is busy: {message}", "overloaded", error_type="rate_limit_error",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    if reason == GENERATION_FAILED:
        return APIError(500, f"generation failed for this request (request id {request_id}): {message}",
                        "generation_failed", error_type="server_error")
    code = "context_length_exceeded" if reason == PROMPT_TOO_LONG else reason
    return bad_request(message, code, "messages")


def _raise_if_refused(answer: Any, request_id: str) -> None:
    error = _refusal_error(answer, request_id)
    if error is not None:
        raise error


async def _sse_events(call: ChatCall, first: StreamPiece, stream: AsyncIterator[StreamPiece]) -> AsyncIterator[str]:
    """OpenAI chunk events: the role, the text pieces, the finish reason, [usage], [DONE]; those of one piece
    go out in one write."""
    events = [sse(chunk_body(call, ChoiceDelta(role="assistant", content="")))]
    piece = first
    try:
        while True:
            if piece.text:
                events.append(sse(chunk_body(call, ChoiceDelta(content=piece.text))))
            if piece.end is not None:
                events.extend(_end_events(call, piece.end))
                break
            yield "".join(events)
            events = []
            piece = await stream.__anext__()
    except Exception as error:  # headers are sent: report in-band, as OpenAI does, then end the stream
        logger.exception("stream %s failed in generation", call.request_id)
        events.append(sse(APIError(500, f"generation failed ({type(error).__name__}); request id {call.request_id}",
                                   "internal_error", error_type="server_error").body()))
    finally:
        if isinstance(stream, AsyncGenerator):  # a model in this replica: its request leaves the batch now
            await stream.aclose()  # (a model deployment's stream is cancelled by Serve when the client leaves)
    events.append(sse("[DONE]"))
    yield "".join(events)


def _end_events(call: ChatCall, end: GenerationResult | dict[str, Any]) -> list[str]:
    error = _refusal_error(end, call.request_id)
    if error is not None:  # failed after its first piece: in-band, as OpenAI reports mid-stream errors
        return [sse(error.body())]
    events = [sse(chunk_body(call, finish_reason=end.finish_reason))]
    if call.include_usage:
        events.append(sse(chunk_body(call, result=end)))
    return events


# Defined before the ingress class: defined after it, its routes raised NameError in the replica.
def _body_too_large(size: str, limit: int) -> APIError:
    return APIError(413, f"the request body is {size} bytes, over max_request_bytes={limit}", "request_too_large")


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class LlavaSPIngress:
    def __init__(self, config: dict[str, Any], models: dict[str, DeploymentHandle] | None = None):
        """models: the model deployments by name; None: serve config's one model from this replica."""
        self.config = ServeConfig(**config)
        self.models: dict[str, DeploymentHandle | ModelServer] = (
            models if models is not None else {self.config.models[0].name: ModelServer(
                dataclasses.asdict(self.config.models[0]), config)})
        self.limits = ChatLimits(self.config.max_tokens_limit, self.config.default_max_tokens,
                                 self.config.max_images_per_request)
        self.created = int(time.time())
        self.api_key = self.config.api_key()  # read once: a missing key file fails the deployment, not requests

    def _authorize(self, request: Request) -> None:
        key = self.api_key
        if key is None:
            return
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {key}".encode()):  # constant time
            problem = "missing" if not header else "wrong"
            raise APIError(401, f"{problem} API key: send 'Authorization: Bearer <key>' "
                           "(the key is configured on the server)", "invalid_api_key")

    def stats(self) -> dict[str, Any]:
        """The counts of the one model served in this replica (no separate ingress)."""
        local = [model for model in self.models.values() if isinstance(model, ModelServer)]
        if not local:
            raise TypeError("this ingress serves its models through their own deployments: ask those")
        return local[0].stats()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "models": sorted(self.models)}

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"object": "list", "data": [Model(id=name, object="model", created=self.created, owned_by="llava-sp")
                                           .model_dump() for name in self.models]}

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        # Serve's proxy gives every request an x-request-id (the client's own, or a new one) and echoes it in the
        # response headers; the same id names the completion and appears in server errors and logs.
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        self._authorize(request)
        call = await self._parse(request)
        call.request_id = f"chatcmpl-{request_id}"
        model = self.models[call.model]
        images = await asyncio.to_thread(self._decode_images, call.image_urls) if call.image_urls else []
        arguments = (call.turns, images, call.sampling, call.system, call.request_id)
        if call.stream:
            stream = (model.stream(*arguments) if isinstance(model, ModelServer)
                      else model.options(stream=True).stream.remote(*arguments))
            first = await stream.__anext__()  # a refused request still gets a 4xx, not a 200 stream
            _raise_if_refused(first.end, request_id)
            return StreamingResponse(_sse_events(call, first, stream), media_type="text/event-stream")
        try:
            answer = await (model.chat(*arguments) if isinstance(model, ModelServer)
                            else model.chat.remote(*arguments))
        except Exception as error:
            logger.exception("request %s failed in generation", request_id)
            raise APIError(500, f"generation failed ({type(error).__name__}); request id {request_id}",
                           "internal_error", error_type="server_error") from error
        _raise_if_refused(answer, request_id)
        return JSONResponse(completion_body(call, answer))

    def _decode_images(self, urls: list[str]) -> list[Image.Image]:
        config = self.config
        return [decode_image_url(url, index, config.max_image_bytes, config.max_image_pixels,
                                 config.allow_remote_images, config.remote_image_timeout_s,
                                 pad_to_square=config.image_aspect == "pad", decoding=config.image_decoding)
                for index, url in enumerate(urls)]

    async def _parse(self, request: Request) -> ChatCall:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != JSON_CONTENT_TYPE:
            # Also what keeps a web page from posting a form or text/plain body to a server on localhost (CSRF).
            raise APIError(415, f"Content-Type must be {JSON_CONTENT_TYPE}, got {content_type or 'none'!r}",
                           "unsupported_media_type")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_request_bytes:
            raise _body_too_large(declared, self.config.max_request_bytes)
        raw = await self._body(request)
        # Parsing a large body off the event loop, so that it keeps accepting other requests meanwhile.
        call = await asyncio.to_thread(parse_chat_request, raw, self.limits)
        if call.model not in self.models:
            raise APIError(404, f"model {call.model!r} does not exist; available: {', '.join(sorted(self.models))}",
                           "model_not_found", "model")
        return call


    async def _body(self, request: Request) -> bytes:
        """The body, refused as soon as it passes max_request_bytes (also when it comes chunked, unannounced)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.config.max_request_bytes:
                raise _body_too_large(f"at least {size}", self.config.max_request_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


# ----------------------------------------------------------------------------------------------------------------
# App builder


def build_app(args: dict[str, Any] | ServeConfig | None = None) -> serve.Application:
    """The Serve application for a ServeConfig (or its dict form, as `serve run` / RayService pass args)."""
    config = args if isinstance(args, ServeConfig) else _config_from_args(args or {})
    # Only ServeConfig's own fields travel to the replicas (a job may extend it with its own options).
    config = ServeConfig(**{field.name: getattr(config, field.name) for field in dataclasses.fields(ServeConfig)})
    # Build an embedded model once, here, rather than racing to write it from every replica.
    config = dataclasses.replace(config, models=[
        spec if spec.source else dataclasses.replace(spec, source=str(resolve_model_dir("", spec.variant, spec.name)))
        for spec in config.models])
    if len(config.models) == 1 and not config.separate_ingress:
        # The model's replicas take the HTTP requests themselves, with the model's replicas and health checks.
        return LlavaSPIngress.options(**_model_options(config.models[0], config), health_check_period_s=5,
                                      health_check_timeout_s=30).bind(dataclasses.asdict(config))
    models = {spec.name: ModelDeployment.options(**_model_options(spec, config)).bind(dataclasses.asdict(spec),
                                                                                     dataclasses.asdict(config))
              for spec in config.models}
    return LlavaSPIngress.options(name="ingress", ray_actor_options={"num_cpus": config.ingress_cpus}).bind(
        dataclasses.asdict(config), models)


def _model_options(spec: ModelSpec, config: ServeConfig) -> dict[str, Any]:
    """The deployment options of a model: its name, resources and replicas (or their autoscaling)."""
    options: dict[str, Any] = {
        "name": f"model-{spec.name}",
        "ray_actor_options": {"num_cpus": spec.cpus_per_replica, "num_gpus": spec.gpus_per_replica},
    }
    if spec.num_replicas == "auto":
        options["autoscaling_config"] = {"min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
                                         "target_ongoing_requests": config.max_batch_size}
    else:
        options["num_replicas"] = spec.num_replicas
    return options


def _config_from_args(args: dict[str, Any]) -> ServeConfig:
    from pipelines.config import load_config

    return load_config(ServeConfig, values=args)

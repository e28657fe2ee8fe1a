"""The Serve app for real: a local Ray, the HTTP proxy on 127.0.0.1, requests over HTTP (httpx and openai)."""

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams
from sp_core.processing import build_llava_sp_processor
from sp_core.tiny import build_tiny_model, save_tiny_model

pytestmark = pytest.mark.integration

PORT = 18431
URL = f"http://127.0.0.1:{PORT}"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _png(seed: int = 0, size=(300, 200)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _chat(model: str = "sp-cropping", text: str = "What colour is the shape?", image: bytes | None = None,
          **extra) -> dict:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": _data_url(image)}})
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 6, **extra}


def _post(body, headers=AUTH, url: str = URL, **kwargs) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        headers = {"content-type": "application/json", **headers}
        return httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, timeout=60, **kwargs)
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60, **kwargs)


def _local_answer(model_dir, text: str, image: bytes | None, max_new_tokens: int = 6) -> str:
    """What the same model says through sp_core directly (the pad preprocessing of training)."""
    generator = LlavaSPGenerator.from_pretrained(model_dir)
    turns = [f"<image>\n{text}" if image is not None else text]
    images = [Image.open(io.BytesIO(image)).convert("RGB")] if image is not None else []
    return generator.generate([GenerationRequest(turns, images, SamplingParams(max_new_tokens))])[0].text


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from ray import serve

    from pipelines.serve.config import ModelSpec, ServeConfig
    from pipelines.serve.job import deploy

    root = tmp_path_factory.mktemp("serve")
    cropping = save_tiny_model(root / "cropping", seed=0, sp_variant="cropping")
    pooling = save_tiny_model(root / "pooling", seed=1, sp_variant="pooling")
    corrupt = _save_corrupt_model(root / "corrupt")
    (root / "key").write_text(KEY + "\n")
    config = ServeConfig(
        models=[ModelSpec(name="sp-cropping", source=str(cropping), cpus_per_replica=0.5),
                ModelSpec(name="sp-pooling", source=str(pooling), cpus_per_replica=0.5),
                ModelSpec(name="corrupt", source=str(corrupt), cpus_per_replica=0.5)],
        port=PORT, app_name="test-serve", max_batch_size=8, max_tokens_limit=64, default_max_tokens=16,
        stream_interval_s=0.0,  # a piece per token, so that the streaming tests see several
        max_image_bytes=300_000, max_image_pixels=1_000_000, max_request_bytes=2_000_000, api_key_file=str(root / "key"),
    )
    assert deploy(config) == URL
    yield {"cropping": cropping, "pooling": pooling, "key": str(root / "key")}
    serve.delete("test-serve")
    serve.shutdown()


@pytest.fixture(scope="module")
def alone(served):
    """sp-cropping served alone, as jobs/serve.py serves one model: its replicas take HTTP themselves."""
    from ray import serve

    from pipelines.serve.config import ModelSpec, ServeConfig
    from pipelines.serve.job import deploy

    config = ServeConfig(models=[ModelSpec(name="sp-cropping", source=str(served["cropping"]), cpus_per_replica=0.5)],
                         port=PORT, app_name="test-serve-alone", route_prefix="/alone", max_batch_size=8,
                         max_tokens_limit=64, default_max_tokens=16, stream_interval_s=0.0, max_image_bytes=300_000,
                         max_image_pixels=1_000_000, api_key_file=served["key"])
    assert deploy(config) == f"{URL}/alone"
    yield
    serve.delete("test-serve-alone")


@pytest.fixture(params=["separate ingress", "in the model's replicas"])
def layout(request, served) -> tuple[str, str]:
    """Where HTTP is taken, as (base URL, Serve app holding the model-sp-cropping deployment)."""
    if request.param == "separate ingress":
        return URL, "test-serve"
    request.getfixturevalue("alone")
    return f"{URL}/alone", "test-serve-alone"


def test_one_model_is_served_without_a_separate_ingress(served, alone):
    from ray import serve

    applications = serve.status().applications
    assert sorted(applications["test-serve-alone"].deployments) == ["model-sp-cropping"]
    assert sorted(applications["test-serve"].deployments) == ["ingress", "model-corrupt", "model-sp-cropping",
                                                              "model-sp-pooling"]
    health = httpx.get(f"{URL}/alone/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["models"] == ["sp-cropping"]
    image = _png(3)
    answer = _post(_chat(image=image), url=f"{URL}/alone").json()["choices"][0]["message"]["content"]
    assert answer == _local_answer(served["cropping"], "What colour is the shape?", image)
    refused = _post(_chat(max_tokens=65), url=f"{URL}/alone")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"


def _save_corrupt_model(directory):
    """A checkpoint whose output layer is NaN: greedy decoding still runs, sampling fails inside generation."""
    model, tokenizer = build_tiny_model(seed=2, sp_variant="cropping")
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(directory)
    build_llava_sp_processor(model.config, tokenizer).save_pretrained(directory)
    return directory


def test_health_and_model_list(served):
    health = httpx.get(f"{URL}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok",
                                                           "models": ["corrupt", "sp-cropping", "sp-pooling"]}
    listed = httpx.get(f"{URL}/v1/models", headers=AUTH, timeout=10).json()
    assert [model["id"] for model in listed["data"]] == ["sp-cropping", "sp-pooling", "corrupt"]


def test_chat_with_an_image_answers_what_the_model_says_locally(served):
    image = _png(3)
    response = _post(_chat(image=image))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "sp-cropping"
    assert body["id"] == f"chatcmpl-{response.headers['x-request-id']}"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert choice["message"]["content"] == _local_answer(served["cropping"], "What colour is the shape?", image)
    usage = body["usage"]
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] > 582
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6


def test_the_model_field_routes_to_that_variant(served):
    image = _png(4)
    cropping = _post(_chat("sp-cropping", image=image)).json()["choices"][0]["message"]["content"]
    pooling = _post(_chat("sp-pooling", image=image)).json()["choices"][0]["message"]["content"]
    assert pooling == _local_answer(served["pooling"], "What colour is the shape?", image)
    assert cropping != pooling


def test_streaming_sends_openai_chunks_that_join_to_the_answer(layout):
    url, _ = layout
    body = _chat(image=_png(5), stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"]]
    assert len([piece for piece in pieces if piece]) >= 2
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    whole = _post({**body, "stream": False}, url=url).json()["choices"][0]["message"]["content"]
    assert "".join(pieces) == whole


def test_concurrent_requests_are_batched(layout):
    from ray import serve

    url, app = layout
    handle = serve.get_deployment_handle("model-sp-cropping", app)
    before = handle.stats.remote().result()
    bodies = [_chat(text=f"How many shapes are there? {index}", max_tokens=3) for index in range(16)]

    async def send_all():
        async with httpx.AsyncClient(timeout=120, headers=AUTH) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body) for body in bodies))

    responses = asyncio.run(send_all())
    assert [response.status_code for response in responses] == [200] * 16
    after = handle.stats.remote().result()
    assert after["requests"] - before["requests"] == 16
    assert after["largest_batch"] > 1 and after["running"] == after["waiting"] == 0  # decoded together, all left
    assert after["forwards"] - before["forwards"] < 16 * 3  # 3 tokens each: unbatched would be 48 forwards
    # Batching does not change answers: the last request alone gives the same text.
    alone = _post(bodies[-1], url=url).json()["choices"][0]["message"]["content"]
    assert responses[-1].json()["choices"][0]["message"]["content"] == alone


def _too_many_pixels_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buffer, "PNG")  # 2 MP, over max_image_pixels=1 MP, tiny once compressed
    return buffer.getvalue()


BAD_REQUESTS = [
    ("invalid json", b'{"model": "sp-cropping", "messages": [', AUTH, 400, "invalid_json", "not valid JSON"),
    ("not an object", b"[1, 2]", AUTH, 400, "invalid_json", "must be a JSON object"),
    ("missing messages", {"model": "sp-cropping"}, AUTH, 400, "missing_messages", "messages: Field required"),
    ("empty messages", {"model": "sp-cropping", "messages": []}, AUTH, 400, "invalid_messages", "at least 1 item"),
    ("unknown model", _chat("llava-13b"), AUTH, 404, "model_not_found", "available: corrupt, sp-cropping"),
    ("missing model", {"messages": [{"role": "user", "content": "hi"}]}, AUTH, 400, "missing_model", "required"),
    ("bad base64", {**_chat(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
     AUTH, 400, "invalid_base64", "not valid base64"),
    ("not an image", _chat(image=b"hello, I am text, not pixels" * 10), AUTH, 400, "image_undecodable",
     "image 0: image_undecodable"),
    ("truncated image", _chat(image=_png(1)[:400]), AUTH, 400, "image_", "image 0:"),
    ("decompression bomb", _chat(image=_too_many_pixels_png()), AUTH, 400, "image_too_large", "over max_pixels"),
    ("a thin image padded", _chat(image=_png(3, size=(1, 1500))), AUTH, 400, "image_too_large",
     "padded to a square for the model it is 1500x1500 = 2250000 pixels"),
    ("a huge prompt", _chat(text="x" * 1_500_000), AUTH, 400, "context_length_exceeded",
     "characters, more than 2048 tokens can hold"),
    ("over the byte limit", _chat(image=_png(2, size=(400, 400))), AUTH, 413, "image_too_many_bytes",
     "max_image_bytes=300000"),
    ("two images", {**_chat(), "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_url(_png(0))}},
        {"type": "image_url", "image_url": {"url": _data_url(_png(1))}}, {"type": "text", "text": "compare"}]}]},
     AUTH, 400, "too_many_images", "at most 1 per chat"),
    ("remote url disabled", {**_chat(), "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]}, AUTH, 400,
     "remote_images_disabled", "remote image URLs are disabled"),
    ("max_tokens zero", _chat(max_tokens=0), AUTH, 400, "invalid_max_tokens", "[1, 64]"),
    ("max_tokens too big", _chat(max_tokens=65), AUTH, 400, "invalid_max_tokens", "got 65"),
    ("temperature", _chat(temperature=3), AUTH, 400, "invalid_temperature", "less than or equal to 2, got 3"),
    ("n=2", _chat(n=2), AUTH, 400, "invalid_n", "n: Input should be 1"),
    ("prompt too long", _chat(text="word " * 2100), AUTH, 400, "context_length_exceeded", "the context is 2048"),
    ("reserved token", _chat(text="<image> sneaky"), AUTH, 400, "reserved_token", "reserved token <image>"),
    ("assistant last", {"model": "sp-cropping", "messages": [{"role": "user", "content": "a"},
                                                             {"role": "assistant", "content": "b"}]},
     AUTH, 400, "invalid_message", "last message must be from the user"),
    ("missing key", _chat(), {}, 401, "invalid_api_key", "missing API key"),
    ("wrong key", _chat(), {"Authorization": "Bearer nope"}, 401, "invalid_api_key", "wrong API key"),
]


@pytest.mark.parametrize(("body", "headers", "status", "code", "fragment"),
                         [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(served, body, headers, status, code,
                                                                      fragment):
    response = _post(body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"].startswith(code) and fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert _post(_chat(max_tokens=1)).status_code == 200


def test_a_failure_inside_generation_is_a_500_with_a_request_id_and_the_replica_survives(served):
    failed = _post(_chat("corrupt", temperature=1.0))  # NaN logits: sampling raises inside the decode loop
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["type"] == "server_error" and failed.headers["x-request-id"] in error["message"]
    greedy = _post(_chat("corrupt"))  # the same replica still answers (argmax of NaNs is a token)
    assert greedy.status_code == 200 and greedy.json()["usage"]["completion_tokens"] == 6
    assert httpx.get(f"{URL}/healthz", timeout=10).status_code == 200


def test_a_tiny_temperature_is_greedy_and_fails_nobody(served):
    """temperature=1e-40 used to overflow the sampler and fail its whole batch with a 500."""
    bodies = [_chat(text=f"Where is the circle? {index}", max_tokens=4) for index in range(3)]
    tiny = _chat(text="Where is the circle? 0", max_tokens=4, temperature=1e-40, seed=2**63 - 1)

    async def send_all():
        async with httpx.AsyncClient(timeout=120, headers=AUTH) as client:
            return await asyncio.gather(*(client.post(f"{URL}/v1/chat/completions", json=body)
                                          for body in [*bodies, tiny]))

    responses = asyncio.run(send_all())
    assert [response.status_code for response in responses] == [200] * 4
    answers = [response.json()["choices"][0]["message"]["content"] for response in responses]
    assert answers[3] == answers[0]  # the same question, greedy
    assert answers[:3] == [_post(body).json()["choices"][0]["message"]["content"] for body in bodies]


def test_only_json_bodies_of_bounded_size_are_read(served):
    """A form or text/plain post (what a web page can send to a local server) is refused, and a body streamed in
    chunks without a Content-Length is cut off at max_request_bytes."""
    body = json.dumps(_chat()).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
        response = httpx.post(f"{URL}/v1/chat/completions", content=body, headers=headers, timeout=60)
        assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"

    def chunks():
        yield b'{"model": "sp-cropping", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 100_000
        yield b'"}]}'

    response = httpx.post(f"{URL}/v1/chat/completions", content=chunks(),
                          headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert response.status_code == 413, response.text
    assert "over max_request_bytes=2000000" in response.json()["error"]["message"]
    assert _post(_chat(max_tokens=1)).status_code == 200


def test_a_client_that_goes_away_mid_stream_leaves_the_batch_and_latencies_are_recorded(layout):
    from ray import serve

    url, app = layout
    handle = serve.get_deployment_handle("model-sp-cropping", app)
    before = handle.stats.remote().result()["outcomes"]

    async def leave_mid_stream():
        async with httpx.AsyncClient(timeout=120, headers=AUTH) as client:
            # Batch-mates that keep the replica decoding, so the stream is still running when its client leaves.
            mates = [asyncio.ensure_future(client.post(f"{url}/v1/chat/completions", json=_chat(
                text=f"Describe everything. {index}", image=_png(index), max_tokens=64))) for index in range(6)]
            body = _chat(text="Describe everything.", image=_png(9), max_tokens=64, stream=True)
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                lines = 0
                async for _ in response.aiter_lines():
                    lines += 1
                    if lines == 3:
                        break  # the client goes away after a few chunks
            return [response.status_code for response in await asyncio.gather(*mates)]

    assert asyncio.run(leave_mid_stream()) == [200] * 6
    deadline, stats = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        stats = handle.stats.remote().result()
        if stats["outcomes"].get("cancelled", 0) > before.get("cancelled", 0) and stats["running"] == 0:
            break
        time.sleep(0.2)
    assert stats["outcomes"]["cancelled"] == before.get("cancelled", 0) + 1  # it left before its 64th token
    assert stats["running"] == stats["waiting"] == 0
    latest = stats["latest"]
    assert latest["time_to_first_token_s"] > 0 and latest["queue_time_s"] >= 0
    assert 0 < latest["time_per_output_token_s"] < 10
    assert _post(_chat(max_tokens=2), url=url).status_code == 200


def test_unknown_route_is_a_json_404(served):
    response = httpx.get(f"{URL}/v1/nothing", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_official_openai_client_works_against_the_endpoint(served):
    from openai import AuthenticationError, NotFoundError, OpenAI

    client = OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
    image = _data_url(_png(6))
    messages = [{"role": "user", "content": [{"type": "text", "text": "Where is the circle?"},
                                             {"type": "image_url", "image_url": {"url": image}}]}]
    completion = client.chat.completions.create(model="sp-pooling", messages=messages, max_tokens=5)
    assert completion.choices[0].message.content == _local_answer(served["pooling"], "Where is the circle?",
                                                                  _png(6), max_new_tokens=5)
    assert completion.usage.completion_tokens == 5
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="sp-pooling", messages=messages, max_tokens=5, stream=True) if chunk.choices]
    assert "".join(pieces) == completion.choices[0].message.content
    assert [model.id for model in client.models.list()] == ["sp-cropping", "sp-pooling", "corrupt"]
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{URL}/v1", api_key="wrong", max_retries=0).models.list()


def test_the_evaluation_judge_client_talks_to_an_openai_compatible_server(served):
    # The GPT judge of LLaVA-Bench / MM-Vet is pluggable: any OpenAI-compatible endpoint, here our own.
    from pipelines.benchmarks.judge_client import (
        JudgeConfig,
        JudgeError,
        OpenAICompatibleJudge,
    )

    judge = OpenAICompatibleJudge(JudgeConfig(url=f"{URL}/v1", model="sp-cropping", api_key=KEY, max_attempts=1))
    review = judge.complete([{"role": "user", "content": "Rate both answers from 1 to 10."}], temperature=0.0,
                            max_tokens=4)
    assert review == _post({"model": "sp-cropping", "max_tokens": 4, "temperature": 0.0, "messages": [
        {"role": "user", "content": "Rate both answers from 1 to 10."}]}).json()["choices"][0]["message"]["content"]
    with pytest.raises(JudgeError, match="refused the request"):
        OpenAICompatibleJudge(JudgeConfig(url=f"{URL}/v1", model="gpt-4-0613", api_key=KEY, max_attempts=1)).complete(
            [{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=4)


def test_the_serving_metrics_reach_rays_prometheus_endpoint_and_the_logs_name_the_request(served, ray_session):
    """What a serving team's Prometheus / Grafana scrape: the replica's counts, as Ray exports them."""
    import glob

    from ray import serve

    request_id = "metrics-test-request-1"
    assert _post(_chat(max_tokens=3), headers={**AUTH, "x-request-id": request_id}).status_code == 200
    node = next(node for node in ray_session.nodes() if node["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    handle = serve.get_deployment_handle("model-sp-cropping", "test-serve")
    deadline, exported = time.monotonic() + 60, {}
    while time.monotonic() < deadline:  # Ray reports metrics every few seconds
        outcomes = handle.stats.remote().result()["outcomes"]
        exported = _exported_requests(httpx.get(url, timeout=10).text, "sp-cropping", "test-serve")
        if exported == outcomes:
            break
        time.sleep(1)
    assert exported == outcomes and exported.get("length", 0) >= 1, (exported, outcomes)
    text = httpx.get(url, timeout=10).text
    for name in ("time_to_first_token_s_bucket", "time_per_output_token_s_bucket", "queue_time_s_bucket",
                 "completion_tokens_total", "running_requests", "waiting_requests"):
        assert any(line.startswith(f"ray_llava_sp_{name}{{") and 'model="sp-cropping"' in line
                   and 'application="test-serve"' in line
                   for line in text.splitlines()), name
    logs = "".join(Path(path).read_text() for path in glob.glob("/tmp/ray/session_latest/logs/serve/"
                                                                 "replica_test-serve_model-sp-cropping_*.log"))
    assert f"request chatcmpl-{request_id}: length after 3 tokens" in logs


def _exported_requests(metrics: str, model: str, application: str) -> dict[str, int]:
    """llava_sp_requests by outcome for one model of one Serve application, from Prometheus' text format."""
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        if (line.startswith("ray_llava_sp_requests_total{") and f'model="{model}"' in line
                and f'application="{application}"' in line):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts

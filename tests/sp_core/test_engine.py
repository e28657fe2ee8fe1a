"""Continuous batching: requests join a running batch, leave it when done or cancelled, and fail alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sp_core.engine import (
    DONE,
    ERROR,
    TEXT,
    EngineFullError,
    EngineLimits,
    GenerationEngine,
)
from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams
from sp_core.tiny import build_tiny_model


@pytest.fixture(scope="module")
def generator() -> LlavaSPGenerator:
    model, tokenizer = build_tiny_model(seed=0, sp_variant="cropping")
    return LlavaSPGenerator(model, tokenizer, LlavaSPImageProcessor(aspect="pad"))


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))


def _prepared(generator, question: str, image_seed: int | None, **sampling):
    turns, images = ([f"<image>\n{question}"], [_image(image_seed)]) if image_seed is not None else ([question], [])
    return generator.prepare(GenerationRequest(turns, images, SamplingParams(ignore_eos=True, **sampling)))


class Listener:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    @property
    def end(self):
        return next((event for event in self.events if event.kind in (DONE, ERROR)), None)

    @property
    def text(self) -> str:
        return "".join(event.text for event in self.events if event.kind == TEXT)


def _solo(generator, prepared):
    return generator.generate([prepared])[0]


def test_a_request_joins_the_running_batch_and_gets_the_tokens_it_gets_alone(generator):
    engine = GenerationEngine(generator, EngineLimits(max_running=8))
    long_ones = [_prepared(generator, "What colour is the shape?", seed, max_new_tokens=24) for seed in (0, 1)]
    short = _prepared(generator, "Hello", None, max_new_tokens=3)
    listeners = [Listener() for _ in range(3)]
    for prepared, listener in zip(long_ones, listeners, strict=False):
        engine.submit(prepared, listener)
    for _ in range(5):  # the long requests are decoding when the short one arrives
        assert engine.step()
    forwards = generator.stats.forwards
    engine.submit(short, listeners[2])
    steps = 0
    while listeners[2].end is None:
        engine.step()
        steps += 1
    assert steps == 3 and listeners[0].end is None  # it joined, finished, and left while the long ones decode
    assert generator.stats.forwards - forwards == 3 + 1  # three decode steps it shared, and its own prefill
    engine.run_until_idle()
    for prepared, listener in zip([*long_ones, short], listeners, strict=True):
        alone = _solo(generator, prepared)
        assert listener.end.kind == DONE and listener.end.result.token_ids == alone.token_ids
        assert listener.text == listener.end.result.text == alone.text


def test_a_request_failing_mid_batch_leaves_its_batch_mates_answers_equal_to_their_solo_answers(generator):
    engine = GenerationEngine(generator)
    mates = [_prepared(generator, "Where is the circle?", 2, max_new_tokens=10),
             _prepared(generator, "How many shapes are there?", None, max_new_tokens=12)]
    # A temperature that would overflow a naive softmax (logits / 1e-40): sampled safely, it is greedy.
    tiny_temperature = _prepared(generator, "What shape is it?", 3, max_new_tokens=10, temperature=1e-40, seed=1)
    faulty = _prepared(generator, "Is it red?", 4, max_new_tokens=10)
    listeners = [Listener() for _ in range(4)]
    requests = [engine.submit(prepared, listener)
                for prepared, listener in zip([mates[0], tiny_temperature, faulty, mates[1]], listeners, strict=True)]
    calls = {"count": 0}
    choose = requests[2].row.choose

    def fails_at_the_fourth_token(logits, greedy):
        calls["count"] += 1
        if calls["count"] == 4:
            raise RuntimeError("a fault of this request alone")
        return choose(logits, greedy)

    requests[2].row.choose = fails_at_the_fourth_token
    engine.run_until_idle()
    greedy = _prepared(generator, "What shape is it?", 3, max_new_tokens=10)
    assert listeners[1].end.kind == DONE and listeners[1].end.result.token_ids == _solo(generator, greedy).token_ids
    assert listeners[2].end.kind == ERROR and "a fault of this request alone" in listeners[2].end.text
    assert len([event for event in listeners[2].events if event.kind in (DONE, ERROR)]) == 1
    for prepared, listener in zip(mates, [listeners[0], listeners[3]], strict=True):
        assert listener.end.kind == DONE
        assert listener.end.result.token_ids == _solo(generator, prepared).token_ids


def test_a_cancelled_request_leaves_at_the_next_step(generator):
    engine = GenerationEngine(generator)
    cancelled, kept = Listener(), Listener()
    gone = engine.submit(_prepared(generator, "Describe the image.", 5, max_new_tokens=40), cancelled)
    other = _prepared(generator, "What colour?", 6, max_new_tokens=8)
    engine.submit(other, kept)
    engine.step()
    engine.step()
    gone.cancel()
    heard = len(cancelled.events)
    engine.run_until_idle()
    assert len(cancelled.events) == heard and cancelled.end is None  # nothing more was computed for it
    assert engine.load == (0, 0)
    assert kept.end.result.token_ids == _solo(generator, other).token_ids


def test_prefill_is_bounded_per_step_and_the_queue_refuses_beyond_its_limit(generator):
    engine = GenerationEngine(generator, EngineLimits(max_running=8, max_prefill_tokens=600, max_waiting=3))
    prepared = [_prepared(generator, "What colour?", seed, max_new_tokens=6) for seed in range(3)]
    assert all(request.prompt_tokens > 300 for request in prepared)  # 582 image tokens each
    listeners = [Listener() for _ in prepared]
    for request, listener in zip(prepared, listeners, strict=True):
        engine.submit(request, listener)
    with pytest.raises(EngineFullError, match="3 requests are waiting"):
        engine.submit(prepared[0], Listener())
    engine.step()
    assert engine.load == (1, 2)  # one image prompt per step within 600 prefill tokens
    engine.step()
    assert engine.load == (2, 1)
    engine.run_until_idle()
    for request, listener in zip(prepared, listeners, strict=True):
        assert listener.end.result.token_ids == _solo(generator, request).token_ids


def test_an_engine_thread_serves_requests_submitted_from_other_threads(generator):
    import threading

    engine = GenerationEngine(generator)
    engine.start()
    try:
        done = [threading.Event() for _ in range(4)]
        results = [None] * 4

        def listener(index):
            def hear(event):
                if event.kind in (DONE, ERROR):
                    results[index] = event
                    done[index].set()
            return hear

        prepared = [_prepared(generator, f"Question {index}?", index if index % 2 else None, max_new_tokens=5 + index)
                    for index in range(4)]
        for index, request in enumerate(prepared):
            engine.submit(request, listener(index))
        assert all(event.wait(60) for event in done)
    finally:
        engine.close()
    for request, event in zip(prepared, results, strict=True):
        assert event.kind == DONE and event.result.token_ids == _solo(generator, request).token_ids


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_running must be at least 1, got 0"):
        GenerationEngine(generator=type("G", (), {"model": torch.nn.Linear(1, 1)})(), limits=EngineLimits(max_running=0))


def test_a_request_that_does_not_stream_hears_only_its_end_with_the_same_answer(generator):
    engine = GenerationEngine(generator)
    prepared = _prepared(generator, "What colour is the shape?", 3, max_new_tokens=12)
    streamed, plain = Listener(), Listener()
    engine.submit(prepared, streamed)
    engine.submit(prepared, plain, streams=False)
    engine.run_until_idle()
    assert [event.kind for event in plain.events] == [DONE]
    assert len(streamed.events) > 2 and streamed.text == streamed.end.result.text
    assert plain.end.result == streamed.end.result

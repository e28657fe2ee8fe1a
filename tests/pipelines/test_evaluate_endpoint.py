"""Evaluation through endpoints: an external OpenAI-compatible server (a stub started here, real HTTP) beside a local
model in one comparison, and the project's own models deployed with Ray Serve for the evaluation (deploy=true)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.evaluate.config import EvalBenchmark, EvalModel, EvaluateConfig
from pipelines.evaluate.endpoint import EndpointError
from pipelines.evaluate.predict import read_answers
from tests.pipelines.openai_stub import StubState, start_stub, stub_answer
from tests.ports import free_port

pytestmark = pytest.mark.integration
KEY_ENV = "LLAVA_SP_TEST_STUB_KEY"


@pytest.fixture
def stub(monkeypatch):
    state = StubState(model="stub-vlm", key="sekrit", busy_first=2)  # = endpoint_retries: never a lost question
    server, url = start_stub(state)
    monkeypatch.setenv(KEY_ENV, "sekrit")
    yield state, url
    server.shutdown()


def _questions(tmp_path: Path, count: int) -> tuple[Path, Path, list[dict]]:
    from pipelines.defaults import embedded_dataset

    dataset = embedded_dataset()
    rows = [json.loads(line) for line in dataset.test_jsonl.read_text().splitlines()[:count]]
    rows[-1]["text"] += " FAIL"  # the stub answers this one with 500, always
    path = tmp_path / "shapes.jsonl"
    path.write_text("".join(json.dumps({"question_id": row["question_id"], "image": row["image"], "text": row["text"],
                                        "answer": row["answer"]}) + "\n" for row in rows))
    return path, dataset.root, rows


def test_an_external_endpoint_answers_beside_a_local_model_in_one_comparison(ray_session, environment, stub,
                                                                             tmp_path):
    from pipelines.evaluate.run import evaluate

    state, url = stub
    questions, images, rows = _questions(tmp_path, 5)
    config = EvaluateConfig(
        models=[EvalModel(name="crop", variant="cropping"),
                EvalModel(name="external", endpoint=url, served_model="stub-vlm", api_key_env=KEY_ENV)],
        benchmarks=[EvalBenchmark(name="shapes", metric="exact", questions=str(questions), images=str(images))],
        max_new_tokens=4, attention_maps=0, endpoint_retries=2, endpoint_concurrency=2,
        output_dir=str(tmp_path / "eval"), train_storage=str(environment / "none"))

    result = evaluate(config)

    answers = {line["question_id"]: line["text"] for line in
               read_answers(Path(config.output_dir) / "external" / "shapes" / "answers.jsonl")}
    expected = {row["question_id"]: stub_answer(row["text"], (images / row["image"]).read_bytes())
                for row in rows[:-1]}
    assert answers == expected  # the image went as its file's own bytes, the question as its text
    errors = [json.loads(line) for line in
              (Path(config.output_dir) / "external" / "shapes" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "HTTP 500: the stub fails on purpose" in errors[0]["reason"]
    assert all(body["temperature"] == 0 and body["max_tokens"] == 4 for body in state.requests)
    # Every attempt beyond a question's first is counted: the two 429s, and the failing question's 1 +
    # endpoint_retries attempts.
    summary = result.predictions["external"]["shapes"]
    assert summary.retries == len(state.requests) - 5 == 2 + 2
    metrics = MlflowClient(result.tracking_uri).get_run(result.model_run_ids["external"]).data.metrics
    assert metrics["shapes/eval_errors"] == 1 and metrics["shapes/eval_retries"] == summary.retries
    comparison = Path(MlflowClient(result.tracking_uri).download_artifacts(result.parent_run_id, "comparison.csv"))
    assert [line.split(",")[0] for line in comparison.read_text().splitlines()[1:]] == ["crop", "external"]


@pytest.mark.parametrize("change, message", [
    ({"api_key_env": "LLAVA_SP_TEST_WRONG_KEY"}, "refused the API key (HTTP 401): Incorrect API key provided"),
    ({"served_model": "llava-1.5-7b"}, "does not serve a model named 'llava-1.5-7b'; it serves: stub-vlm"),
    ({"api_key_env": "LLAVA_SP_TEST_UNSET"}, "api_key_env=LLAVA_SP_TEST_UNSET, but $LLAVA_SP_TEST_UNSET is not set"),
    ({"endpoint": "http://127.0.0.1:9/v1"}, "cannot reach http://127.0.0.1:9/v1"),
])
def test_a_wrong_key_or_an_unknown_model_fails_before_any_question(ray_session, environment, stub, tmp_path,
                                                                   monkeypatch, change, message):
    from pipelines.evaluate.run import evaluate

    state, url = stub
    monkeypatch.setenv("LLAVA_SP_TEST_WRONG_KEY", "guess")
    questions, images, _ = _questions(tmp_path, 2)
    model = {"name": "external", "endpoint": url, "served_model": "stub-vlm", "api_key_env": KEY_ENV, **change}
    config = EvaluateConfig(models=[EvalModel(**model)], output_dir=str(tmp_path / "eval"), attention_maps=0,
                            benchmarks=[EvalBenchmark(name="shapes", metric="exact", questions=str(questions),
                                                      images=str(images))])
    with pytest.raises(EndpointError, match="^model external: .*" + re.escape(message)):
        evaluate(config)
    assert state.requests == []  # no question was sent



def test_deployed_models_answer_token_for_token_as_the_actor_path(ray_session, environment, tmp_path):
    from ray import serve

    from pipelines.evaluate.run import evaluate

    common = dict(models=[EvalModel(name="crop", variant="cropping")], max_questions=6, max_new_tokens=8,
                  attention_maps=0, train_storage=str(environment / "none"))
    actors = evaluate(EvaluateConfig(**common, output_dir=str(tmp_path / "actors")))
    served = evaluate(EvaluateConfig(**common, output_dir=str(tmp_path / "served"), deploy=True,
                                     serve_port=free_port()))

    def texts(root: str) -> dict:
        return {line["question_id"]: line["text"] for line in
                read_answers(tmp_path / root / "crop" / "synthetic" / "answers.jsonl")}

    assert texts("served") == texts("actors") and len(texts("actors")) == 6
    assert len(set(texts("actors").values())) > 1 and all(texts("actors").values())  # real, varied answers
    assert served.scores["crop"]["synthetic"]["accuracy"] == actors.scores["crop"]["synthetic"]["accuracy"]
    assert served.scores["crop"]["synthetic"]["eval_retries"] == 0
    assert not [name for name in serve.status().applications if name.startswith("llava-sp-evaluate-")]

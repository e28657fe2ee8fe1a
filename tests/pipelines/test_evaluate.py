"""Batch evaluation on a real local Ray and MLflow store: resume, error accounting, artifacts, the score CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines.config import ConfigError, load_config
from pipelines.evaluate.answer_provenance import (
    AnswerProvenance,
    directory_digest,
    file_digest,
    read_provenance,
)
from pipelines.evaluate.config import EvalBenchmark, EvalModel, EvaluateConfig
from pipelines.evaluate.predict import ActorPool, predict, read_answers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE_OPTIONS = {"image_aspect": "pad", "image_resize": "pil", "image_decoding": "llava"}  # the defaults


def _actors() -> ActorPool:
    from pipelines.defaults import embedded_model_dir

    return ActorPool(str(embedded_model_dir("cropping")), batch_size=8, num_actors=1, cpus_per_actor=1.0,
                     gpus_per_actor=0.0, image_options=IMAGE_OPTIONS)


@pytest.fixture(scope="module")
def first_run(ray_session, environment):
    from pipelines.evaluate.run import evaluate

    config = EvaluateConfig(models=[EvalModel(name="crop", variant="cropping"), EvalModel(name="pool",
                                                                                          variant="pooling")],
                            max_questions=6, max_new_tokens=4, attention_maps=2,
                            output_dir=str(environment / "eval"), train_storage=str(environment / "none"))
    return config, evaluate(config)


def test_scores_tables_and_artifacts_land_in_mlflow(first_run):
    _, result = first_run
    client = MlflowClient(result.tracking_uri)
    parent = [artifact.path for artifact in client.list_artifacts(result.parent_run_id)]
    assert {"comparison.md", "comparison.csv", "synthetic_by_question_type.md"} <= set(parent)
    comparison = client.download_artifacts(result.parent_run_id, "comparison.csv")
    assert Path(comparison).read_text().splitlines()[0] == "model,synthetic (accuracy)"
    for model in ("crop", "pool"):
        run = client.get_run(result.model_run_ids[model])
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        scores = result.scores[model]["synthetic"]
        assert run.data.metrics["synthetic/accuracy"] == scores["accuracy"]
        assert scores["questions"] == 6 and scores["missing"] == 0 and scores["eval_errors"] == 0
        assert 0 < scores["uniform_chance"] < 1
        answers = client.download_artifacts(run.info.run_id, "predictions/synthetic/answers.jsonl")
        lines = [json.loads(line) for line in Path(answers).read_text().splitlines()]
        assert len(lines) == 6 and {"question_id", "prompt", "text", "answer_id", "model_id"} <= set(lines[0])
        assert all(line["model_id"] == model for line in lines)
    # Both released variants have the DFI: one attention plot per image (paper Fig. 5).
    plots = client.list_artifacts(result.model_run_ids["pool"], "plots/attention")
    assert sorted(Path(plot.path).name for plot in plots) == ["attention_0.png", "attention_1.png"]


def test_models_evaluated_side_by_side_give_the_same_answers_in_the_configured_order(first_run, environment):
    from dataclasses import replace

    from pipelines.evaluate.run import evaluate

    config, in_turn = first_run
    side_by_side = evaluate(replace(config, models_at_once=2, cpus_per_actor=0.5, attention_maps=0,
                                    output_dir=str(environment / "eval-side-by-side")))
    assert list(side_by_side.model_run_ids) == list(side_by_side.scores) == ["crop", "pool"]
    client = MlflowClient(side_by_side.tracking_uri)
    for model in ("crop", "pool"):
        run = client.get_run(side_by_side.model_run_ids[model])
        assert run.data.tags["model"] == model and run.data.tags["mlflow.parentRunId"] == side_by_side.parent_run_id
        assert side_by_side.scores[model] == in_turn.scores[model]
        in_turn_answers, side_by_side_answers = (
            [(line["question_id"], line["text"]) for line in read_answers(Path(out) / model / "synthetic" /
                                                                          "answers.jsonl")]
            for out in (config.output_dir, environment / "eval-side-by-side"))
        assert side_by_side_answers == in_turn_answers and len(in_turn_answers) == 6


def test_a_rerun_asks_only_the_missing_questions(first_run):
    from pipelines.benchmarks import get_benchmark
    from pipelines.defaults import embedded_dataset

    config, _ = first_run
    out_dir = Path(config.output_dir) / "crop" / "synthetic"
    answers_path = out_dir / "answers.jsonl"
    before = read_answers(answers_path)
    # An interruption: three complete lines kept, the fourth cut in the middle.
    lines = answers_path.read_text().splitlines()
    answers_path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    questions = get_benchmark("synthetic").load_questions(out_dir / "questions-first6.jsonl")
    for question in questions:
        question.max_new_tokens = 4
    summary = predict(questions, _actors(), "crop", embedded_dataset().root, out_dir,
                      provenance=read_provenance(out_dir))  # the first run's inputs
    assert (summary.answered_before, summary.answered_now, summary.errors) == (3, 3, 0)
    assert summary.resumed.startswith(f"resuming 3 answers from {answers_path} (same model sha256 ")
    after = read_answers(answers_path)
    assert [(line["question_id"], line["text"]) for line in after] == [(line["question_id"], line["text"])
                                                                       for line in before]


def test_a_question_whose_image_is_missing_is_counted_and_retried(first_run, tmp_path):
    from pipelines.benchmarks import get_benchmark
    from pipelines.defaults import embedded_dataset, embedded_model_dir

    dataset = embedded_dataset()
    rows = [json.loads(line) for line in dataset.test_jsonl.read_text().splitlines()[:3]]
    rows[1]["image"] = "images/not-there.png"
    questions_path = tmp_path / "questions.jsonl"
    questions_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    questions = get_benchmark("synthetic").load_questions(questions_path)
    for question in questions:
        question.max_new_tokens = 2
    provenance = AnswerProvenance(directory_digest(embedded_model_dir("cropping")), file_digest(questions_path),
                                  str(dataset.root), IMAGE_OPTIONS)
    summary = predict(questions, _actors(), "crop", dataset.root, tmp_path / "out", provenance=provenance)
    assert (summary.answered_now, summary.errors) == (2, 1)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "not-there.png" in errors[0]["reason"]
    scores = get_benchmark("synthetic").score(read_answers(summary.answers_path), questions_path, None)
    assert scores["missing"] == 1 and scores["questions"] == 3


def test_the_score_job_prints_one_json_object(first_run):
    config, _ = first_run
    out_dir = Path(config.output_dir) / "pool" / "synthetic"
    done = subprocess.run([sys.executable, "jobs/score.py", "benchmark=synthetic",
                           f"questions={out_dir / 'questions-first6.jsonl'}", f"answers={out_dir / 'answers.jsonl'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    expected = json.loads((out_dir / "scores.json").read_text())  # what the evaluation run logged
    expected.pop("eval_errors")
    assert metrics == expected and metrics["questions"] == 6
    failed = subprocess.run([sys.executable, "jobs/score.py", "benchmark=nope", "questions=x", "answers=y"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == 2 and failed.stderr.startswith("score: error:") and "synthetic" in failed.stderr


def test_your_own_question_file_goes_through_evaluation_into_the_mlflow_comparison(ray_session, environment,
                                                                                      tmp_path):
    """A user's LLaVA-format question file with a category field, scored with a metric of their choice, beside a
    paper-style benchmark in the same comparison table."""
    from pipelines.defaults import embedded_dataset
    from pipelines.evaluate.run import evaluate

    dataset = embedded_dataset()
    rows = [json.loads(line) for line in dataset.test_jsonl.read_text().splitlines()[:4]]
    mine = tmp_path / "my_shapes.jsonl"
    mine.write_text("".join(json.dumps({"question_id": f"mine-{row['question_id']}", "image": row["image"],
                                        "text": row["text"], "answer": row["answer"],
                                        "category": row["question_type"]}) + "\n" for row in rows))
    config = EvaluateConfig(models=[EvalModel(name="crop", variant="cropping")],
                            benchmarks=[EvalBenchmark(name="synthetic"),
                                        EvalBenchmark(name="my_shapes", metric="exact", questions=str(mine),
                                                      images=str(dataset.root))],
                            max_questions=4, max_new_tokens=4, attention_maps=0,
                            output_dir=str(tmp_path / "eval"), train_storage=str(environment / "none"))
    result = evaluate(config)
    scores = result.scores["crop"]["my_shapes"]
    categories = {row["question_type"] for row in rows}
    assert scores["questions"] == 4 and {f"category/{name}" for name in categories} <= set(scores)
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.model_run_ids["crop"])
    assert run.data.metrics["my_shapes/accuracy"] == scores["accuracy"]
    comparison = Path(client.download_artifacts(result.parent_run_id, "comparison.csv")).read_text().splitlines()
    assert comparison[0] == "model,my_shapes (accuracy),synthetic (accuracy)"
    answers = Path(config.output_dir) / "crop" / "my_shapes" / "answers.jsonl"
    questions = Path(config.output_dir) / "crop" / "my_shapes" / "questions-first4.jsonl"
    done = subprocess.run([sys.executable, "jobs/score.py", "benchmark=my_shapes", "metric=exact",
                           f"questions={questions}", f"answers={answers}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == scores["accuracy"]


def test_bad_evaluate_options_fail_before_any_work():
    with pytest.raises(ConfigError) as error:
        load_config(EvaluateConfig, None, ["batch_size=0", "image_aspect=crop", "image_resize=cv2",
                                           "image_decoding=viewer"])
    message = str(error.value)
    assert "option 'batch_size' = 0: Input should be greater than 0" in message
    assert "option 'image_aspect' = 'crop': Input should be 'pad' or 'square'" in message
    assert "option 'image_resize' = 'cv2': Input should be 'torch' or 'pil'" in message
    assert "option 'image_decoding' = 'viewer': Input should be 'llava' or 'display'" in message
    with pytest.raises(ConfigError) as error:  # the checks across options, once each option is valid
        load_config(EvaluateConfig, None, ["benchmarks=[{name: vqa9}, {name: pope}]"])
    message = str(error.value)
    assert "benchmark 'vqa9' is unknown" in message and "benchmark pope: questions= is required" in message
    assert EvaluateConfig(benchmarks=[EvalBenchmark(name="pope", questions="q.jsonl")]).benchmarks[0].name == "pope"


@pytest.mark.parametrize(("variant", "shape"), [("cropping", (2, 6, 25)), ("pooling", (2, 6, 25)), ("none", None)])
def test_attention_maps_exist_for_dfi_models_only(variant, shape, tmp_path):
    from PIL import Image

    from pipelines.evaluate.attention import attention_maps, plot_attention
    from sp_core.image_processing import LlavaSPImageProcessor
    from sp_core.inference import LlavaSPGenerator
    from sp_core.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(seed=0, sp_variant=variant)
    generator = LlavaSPGenerator(model, tokenizer, LlavaSPImageProcessor())
    images = [Image.new("RGB", (320, 240), "red"), Image.new("RGB", (200, 300), "blue")]
    maps = attention_maps(generator, images)
    if shape is None:  # the LLaVA-1.5 baseline: no spatial tokens, no DFI, no plot
        assert maps is None
        return
    assert tuple(maps.shape) == shape and torch.allclose(maps.sum(-1), torch.ones(2, 6), atol=1e-5)
    path = plot_attention(images[0], maps[0], variant, tmp_path / "map.png")
    assert path.stat().st_size > 5000 and Image.open(path).size[0] > Image.open(path).size[1]

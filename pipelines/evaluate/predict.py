"""Answering a benchmark with Ray Data: questions -> a pool of model actors, or an endpoint -> answer lines, resumable.

Each actor holds one `LlavaSPGenerator` (sp_core's batched generation) and answers a batch of questions in one decode
loop; through an endpoint (endpoint.py), questions go out as chat requests, a bounded number at a time. The driver appends answers to `answers.jsonl` as batches come
back, so an interrupted run keeps what it finished and a re-run only asks the questions still missing; answers are
resumed only when the same model, question file and settings made them (answer_provenance.py). A question
whose image cannot be read is not silently dropped: it goes to `errors.jsonl` with its reason, is counted, and is
asked again on the next run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from tqdm import tqdm

from pipelines.benchmarks import EvalQuestion, answer_record
from pipelines.evaluate.answer_provenance import AnswerProvenance, claim_answers
from pipelines.evaluate.endpoint import Endpoint, EndpointPredictor
from sp_core.conversation import IMAGE
from sp_core.image_decoding import ImageError, load_rgb_image
from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams

logger = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
ERRORS_FILE = "errors.jsonl"


def question_key(question_id: Any, metadata: dict[str, Any] | None = None) -> str:
    """One key per answer line: MMBench's circular rounds share a question_id and differ in round_id."""
    round_id = (metadata or {}).get("round_id")
    return json.dumps([str(question_id), round_id])


@dataclass
class PredictionSummary:
    answered_before: int  # lines already in answers.jsonl (a resumed run)
    answered_now: int
    errors: int  # questions that could not be asked this run (see errors.jsonl)
    answers_path: Path
    resumed: str = ""  # what was resumed from where, or why nothing was
    retries: int = 0  # requests an endpoint had to repeat (429, 5xx, lost connections)
    seconds: float = 0.0  # from the first question sent to the last answer written (actor start-up included)


class LlavaSPPredictor:
    """A Ray Data callable class: load the model once per actor, answer a batch of questions per call."""

    def __init__(self, model_dir: str, image_root: str, image_aspect: str, image_resize: str, image_decoding: str):
        device = "cuda" if torch.cuda.is_available() else "cpu"  # an actor given a GPU (gpus_per_actor) uses it
        self.generator = LlavaSPGenerator.from_pretrained(model_dir, device=device, aspect=image_aspect,
                                                          resize=image_resize)
        self.image_root = Path(image_root)
        self.image_decoding = image_decoding

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        requests, keys, errors, asked = [], [], [], []
        for row in range(len(batch["key"])):
            try:
                requests.append(self._request(batch, row))
                asked.append(row)
            except (ImageError, FileNotFoundError, OSError) as error:
                errors.append((row, f"{type(error).__name__}: {error}"))
        results = self.generator.generate(requests) if requests else []
        texts = {row: result.text for row, result in zip(asked, results, strict=True)}
        reasons = dict(errors)
        keys = list(batch["key"])
        return {"key": keys, "text": [texts.get(row, "") for row in range(len(keys))],
                "error": [reasons.get(row, "") for row in range(len(keys))]}

    def _request(self, batch: dict[str, np.ndarray], row: int) -> GenerationRequest:
        prompt = str(batch["prompt"][row])
        image_bytes, image_path = batch["image_bytes"][row], batch["image"][row]
        images = []
        if image_bytes is not None and len(image_bytes):
            images = [load_rgb_image(bytes(image_bytes), decoding=self.image_decoding)]
        elif image_path:
            images = [load_rgb_image(self.image_root / str(image_path), decoding=self.image_decoding)]
        turn = f"{IMAGE}\n{prompt}" if images else prompt
        return GenerationRequest([turn], images, SamplingParams(max_new_tokens=int(batch["max_new_tokens"][row])))


@dataclass(frozen=True)
class ActorPool:
    """Answers from a pool of Ray actors, each holding the model of model_dir."""

    model_dir: str
    batch_size: int
    num_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    image_options: dict[str, str]  # image_aspect, image_resize and image_decoding, as the model was trained

    def answer(self, questions: ray.data.Dataset, image_root: Path) -> ray.data.Dataset:
        return questions.map_batches(
            LlavaSPPredictor,
            fn_constructor_kwargs={"model_dir": self.model_dir, "image_root": str(image_root), **self.image_options},
            batch_size=self.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.num_actors),
            num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor or None)


@dataclass(frozen=True)
class ThroughEndpoint:
    """Answers from an OpenAI-compatible endpoint, `concurrency` questions in flight."""

    endpoint: Endpoint
    concurrency: int

    @property
    def batch_size(self) -> int:
        return self.concurrency

    def answer(self, questions: ray.data.Dataset, image_root: Path) -> ray.data.Dataset:
        # One actor keeps one HTTP connection pool; its threads wait on the network, not on a core.
        return questions.map_batches(
            EndpointPredictor, fn_constructor_kwargs={"endpoint": asdict(self.endpoint), "image_root": str(image_root),
                                                      "concurrency": self.concurrency},
            batch_size=self.concurrency, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.25)


def predict(questions: list[EvalQuestion], answerer: ActorPool | ThroughEndpoint, model_id: str, image_root: Path,
            out_dir: Path, provenance: AnswerProvenance) -> PredictionSummary:
    """Answer every question not yet in out_dir/answers.jsonl (answers made by `provenance`'s inputs only);
    returns counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    answers_path, errors_path = out_dir / ANSWERS_FILE, out_dir / ERRORS_FILE
    resumed = claim_answers(answers_path, provenance)
    done = _answered_keys(answers_path)
    todo = {question_key(question.question_id, question.metadata): question for question in questions}
    todo = {key: question for key, question in todo.items() if key not in done}
    summary = PredictionSummary(len(done), 0, 0, answers_path, resumed)
    errors_path.unlink(missing_ok=True)  # errors describe the latest run only; their questions are retried
    if not todo:
        return summary
    rows = [_row(key, question) for key, question in todo.items()]
    started = time.perf_counter()
    batch_size = answerer.batch_size
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 64)))
    answered = answerer.answer(dataset, image_root)
    with answers_path.open("a") as answers, tqdm(total=len(rows), desc=f"{model_id}: answering",
                                                 unit="question") as progress:
        for batch in _batches(answered, batch_size):
            summary.retries += int(np.sum(batch["retries"])) if "retries" in batch else 0
            for key, text, error in zip(batch["key"], batch["text"], batch["error"], strict=True):
                if error:
                    summary.errors += 1
                    with errors_path.open("a") as errors:
                        errors.write(json.dumps({"key": str(key), "reason": str(error)}) + "\n")
                    continue
                answers.write(json.dumps(answer_record(todo[str(key)], str(text), model_id)) + "\n")
                summary.answered_now += 1
            answers.flush()  # what is written survives an interruption
            progress.update(len(batch["key"]))
    summary.seconds = time.perf_counter() - started
    if summary.errors:
        logger.warning("%s: %d questions could not be asked (see %s); a re-run retries them", model_id,
                       summary.errors, errors_path)
    return summary


def _batches(dataset: ray.data.Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    yield from dataset.iter_batches(batch_size=batch_size, batch_format="numpy")


def _row(key: str, question: EvalQuestion) -> dict[str, Any]:
    return {"key": key, "prompt": question.prompt, "image": question.image or "",
            "image_bytes": question.image_bytes or b"", "max_new_tokens": question.max_new_tokens}


def _answered_keys(path: Path) -> set[str]:
    """Keys of the complete lines already written; a line cut short by an interruption is dropped and re-asked."""
    if not path.is_file():
        return set()
    keys, lines = set(), []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        keys.add(question_key(record["question_id"], record))
        lines.append(line)
    path.write_text("".join(f"{line}\n" for line in lines))
    return keys


def read_answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Questions/s of evaluation through Ray Data actors against evaluation through the Serve app (deploy=true), side by
side in one run, on the tiny model and the synthetic test split.

    .venv/bin/python -m bench.evaluate [--questions 48] [--max-new-tokens 16] [--rounds 2]

Both paths answer the same questions greedily and give the same answers token for token (the bench checks). Each
round times one whole `evaluate()` per path, fresh answer folders each time, alternating which path goes first:
the actor path starts its actor pool, the Serve path deploys the app, answers through HTTP (up to
endpoint_concurrency questions in flight, continuous batching in the replica) and removes the app. The best round
counts, for the whole call and for the answering alone. Asserts nothing on time.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from pipelines.evaluate.config import EvalModel, EvaluateConfig
from pipelines.evaluate.predict import read_answers
from pipelines.evaluate.run import evaluate
from tests.ports import free_port


def timed(config: EvaluateConfig) -> tuple[float, float, dict[str, str]]:
    """(seconds of the whole evaluate(), seconds of answering alone, the answers)."""
    started = time.perf_counter()
    result = evaluate(config)
    seconds = time.perf_counter() - started
    answers = Path(config.output_dir) / "tiny" / "synthetic" / "answers.jsonl"
    answering = result.predictions["tiny"]["synthetic"].seconds
    return seconds, answering, {str(line["question_id"]): line["text"] for line in read_answers(answers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    common = dict(models=[EvalModel(name="tiny", variant="cropping")], max_questions=args.questions,
                  max_new_tokens=args.max_new_tokens, attention_maps=0, batch_size=8,
                  train_storage=str(work / "no-training"))
    evaluate(EvaluateConfig(**{**common, "max_questions": 4}, output_dir=str(work / "warmup")))  # Ray's workers

    best = {"actors": float("inf"), "serve": float("inf")}
    best_answering = dict(best)
    answers: dict[str, dict[str, str]] = {}
    for round_index in range(args.rounds):
        order = ["actors", "serve"] if round_index % 2 == 0 else ["serve", "actors"]
        for path in order:
            config = EvaluateConfig(**common, output_dir=str(work / f"{path}-{round_index}"),
                                    deploy=path == "serve", serve_port=free_port())
            seconds, answering, answers[path] = timed(config)
            best[path] = min(best[path], seconds)
            best_answering[path] = min(best_answering[path], answering)
    same = answers["actors"] == answers["serve"]
    print(f"{args.questions} synthetic questions, {args.max_new_tokens} new tokens at most, tiny model, one actor / "
          f"one replica, batch 8, best of {args.rounds}; whole evaluate() call, and answering alone (the actor "
          "path's includes starting its actor; the Serve app is deployed before):")
    for path in ("actors", "serve"):
        print(f"  {path:<7} whole {best[path]:6.1f} s  {args.questions / best[path]:6.2f} questions/s   answering "
              f"{best_answering[path]:6.1f} s  {args.questions / best_answering[path]:6.2f} questions/s")
    print(f"  serve / actors: whole {best['actors'] / best['serve']:.2f}x, answering "
          f"{best_answering['actors'] / best_answering['serve']:.2f}x questions/s; same answers: {same}")


if __name__ == "__main__":
    main()

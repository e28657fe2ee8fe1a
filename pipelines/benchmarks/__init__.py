"""Evaluation benchmarks: question loaders and scorers that match the official LLaVA / LLaVA-SP scripts.

    from pipelines.benchmarks import get_benchmark, answer_record
    benchmark = get_benchmark("pope")
    questions = benchmark.load_questions(Path("llava_pope_test.jsonl"))
    answers = [answer_record(question, generate(question), model_id="llava-sp") for question in questions]
    metrics = benchmark.evaluate(answers, Path("llava_pope_test.jsonl"), annotations=Path("pope/coco"))

Pure Python (no Ray, no torch); `python jobs/score.py --help` scores answer files.
"""

from pipelines.benchmarks.base import (
    LOADER_MAX_NEW_TOKENS,
    LONG_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    EvalQuestion,
    answer_record,
)
from pipelines.benchmarks.own import METRICS as OWN_METRICS
from pipelines.benchmarks.registry import (
    BENCHMARKS,
    UnknownBenchmarkError,
    benchmark_for,
    get_benchmark,
)

__all__ = [
    "BENCHMARKS",
    "LOADER_MAX_NEW_TOKENS",
    "LONG_MAX_NEW_TOKENS",
    "OWN_METRICS",
    "Benchmark",
    "BenchmarkDataError",
    "EvalQuestion",
    "UnknownBenchmarkError",
    "answer_record",
    "benchmark_for",
    "get_benchmark",
]

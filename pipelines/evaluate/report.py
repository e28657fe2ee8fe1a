"""Score tables: one row per model, the headline number of each benchmark (laid out like the paper's Tab. 1), and
the synthetic split per question type against chance."""

from __future__ import annotations

import csv
import io

# The number the paper (and LLaVA-1.5) reports for each benchmark.
HEADLINE = {
    "vqav2": "accuracy", "gqa": "accuracy", "vizwiz": "accuracy", "scienceqa": "img_accuracy",
    "textvqa": "accuracy", "pope": "average/f1", "mme": "perception", "mmbench": "accuracy",
    "mmbench_cn": "accuracy", "seed": "image_accuracy", "mmvp": "accuracy", "refcoco": "accuracy",
    "synthetic": "accuracy", "llava_bench": "relative", "mmvet": "total",
}


def headline_rows(scores: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """scores[model][benchmark] = metrics -> (header, rows) of headline numbers."""
    benchmarks = sorted({benchmark for by_benchmark in scores.values() for benchmark in by_benchmark})
    header = ["model", *(f"{benchmark} ({HEADLINE.get(benchmark, 'accuracy')})" for benchmark in benchmarks)]
    rows = []
    for model, by_benchmark in scores.items():
        row = [model]
        for benchmark in benchmarks:
            value = by_benchmark.get(benchmark, {}).get(HEADLINE.get(benchmark, "accuracy"))
            row.append("-" if value is None else _number(value))
        rows.append(row)
    return header, rows


def synthetic_rows(scores: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]] | None:
    """Accuracy per question type for each model, next to uniform chance and the majority-answer baseline."""
    synthetic = {model: by_benchmark["synthetic"] for model, by_benchmark in scores.items()
                 if "synthetic" in by_benchmark}
    if not synthetic:
        return None
    any_metrics = next(iter(synthetic.values()))
    types = sorted(key.split("/")[0] for key in any_metrics if key.endswith("/accuracy"))
    header = ["question type", *synthetic, "uniform chance", "majority baseline"]
    rows = []
    for group, prefix in [*((question_type, f"{question_type}/") for question_type in types), ("all", "")]:
        row = [group, *(_number(metrics.get(f"{prefix}accuracy", float("nan"))) for metrics in synthetic.values())]
        for chance in ("uniform_chance", "majority_baseline"):
            value = any_metrics.get(f"{prefix}{chance}")
            row.append("-" if value is None else _number(value))
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"

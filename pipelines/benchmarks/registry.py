"""Benchmark name -> benchmark, the one place where names are mapped to modules.

Kept apart from base.py because every benchmark module imports base.py; the registry imports them all.
"""

from __future__ import annotations

from pipelines.benchmarks.base import Benchmark
from pipelines.benchmarks.gqa import GQABenchmark
from pipelines.benchmarks.judge import LlavaBenchBenchmark, MMVetBenchmark
from pipelines.benchmarks.mmbench import MMBenchBenchmark
from pipelines.benchmarks.mme import MMEBenchmark
from pipelines.benchmarks.mmvp import MMVPBenchmark
from pipelines.benchmarks.own import OwnBenchmark
from pipelines.benchmarks.pope import PopeBenchmark
from pipelines.benchmarks.refcoco import RefCOCOBenchmark
from pipelines.benchmarks.scienceqa import ScienceQABenchmark
from pipelines.benchmarks.seed import SEEDBenchmark
from pipelines.benchmarks.synthetic import SyntheticBenchmark
from pipelines.benchmarks.textvqa import TextVQABenchmark
from pipelines.benchmarks.vizwiz import VizWizBenchmark
from pipelines.benchmarks.vqav2 import VQAv2Benchmark


class UnknownBenchmarkError(ValueError):
    """A benchmark name that is not registered; the message lists the known ones."""


BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        VQAv2Benchmark(),
        GQABenchmark(),
        VizWizBenchmark(),
        TextVQABenchmark(),
        ScienceQABenchmark(),
        PopeBenchmark(),
        MMEBenchmark(),
        MMBenchBenchmark(name="mmbench", lang="en"),
        MMBenchBenchmark(name="mmbench_cn", lang="cn"),
        SEEDBenchmark(),
        MMVPBenchmark(),
        RefCOCOBenchmark(),
        SyntheticBenchmark(),
        LlavaBenchBenchmark(),  # the judge comes from the environment at score time (judge_client.py)
        MMVetBenchmark(),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def benchmark_for(name: str, metric: str = "") -> Benchmark:
    """A paper benchmark by its name; with `metric`, the user's own question file under the user's name for it,
    scored with that metric (own.py)."""
    if not metric:
        return get_benchmark(name)
    if name in BENCHMARKS:
        raise UnknownBenchmarkError(f"benchmark {name!r} with metric={metric}: {name} is a paper benchmark scored by "
                                    "its own rules; give your own benchmark another name")
    return OwnBenchmark(name, metric)

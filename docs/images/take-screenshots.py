"""Take docs/mlflow.md's screenshots of the demo's MLflow store with headless Chromium.

    make demo && .venv/bin/python docs/images/take-screenshots.py [--store sqlite:///mlflow.db] [--chromium chromium]

Starts `mlflow ui` on the store (127.0.0.1, a free port), opens the demo experiment's run list and the comparison
of its evaluation runs, and writes docs/images/mlflow-runs.png and mlflow-compare.png.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shoot(chromium: str, url: str, out: Path) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1600,900", "--virtual-time-budget=15000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="llava-sp-demo")
    parser.add_argument("--chromium", default="chromium")
    arguments = parser.parse_args()
    client = MlflowClient(arguments.store)
    experiment = client.get_experiment_by_name(arguments.experiment)
    evaluations = [run for run in client.search_runs([experiment.experiment_id])
                   if run.data.tags.get("kind") == "evaluate" and "mlflow.parentRunId" in run.data.tags]
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                               arguments.store, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        shoot(arguments.chromium, f"{base}/#/experiments/{experiment.experiment_id}", HERE / "mlflow-runs.png")
        runs = json.dumps([run.info.run_id for run in evaluations])
        query = urllib.parse.urlencode({"runs": runs, "experiments": json.dumps([experiment.experiment_id])})
        shoot(arguments.chromium, f"{base}/#/compare-runs?{query}", HERE / "mlflow-compare.png")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

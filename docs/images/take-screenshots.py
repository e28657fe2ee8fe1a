"""Take docs/mlflow.md's screenshots of the demo's MLflow store in a headless Chromium.

    make demo
    .venv/bin/pip install playwright                       # not a project dependency: only this script uses it
    .venv/bin/python docs/images/take-screenshots.py [--store sqlite:///mlflow.db] [--chromium /usr/bin/chromium]

Starts `mlflow ui` on the store (127.0.0.1, a free port), opens the demo experiment's run list with the evaluation's
runs unfolded, then the comparison of the evaluation's runs at its metrics, and writes docs/images/mlflow-runs.png
and docs/images/mlflow-compare.png. Any Chromium will do (Playwright drives the one given; it downloads none).
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
from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_timeout(4000)
    close = page.get_by_role("button", name="Close")  # the assistant's side panel
    if close.count():
        close.first.click()
        page.wait_for_timeout(500)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="llava-sp-demo")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    arguments = parser.parse_args()
    client = MlflowClient(arguments.store)
    experiment = client.get_experiment_by_name(arguments.experiment)
    evaluations = [run.info.run_id for run in client.search_runs([experiment.experiment_id])
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
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=arguments.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 820})
            open_page(page, f"{base}/#/experiments/{experiment.experiment_id}/runs")
            expand = page.get_by_role("button", name="Expand")
            if expand.count():
                expand.first.click()
                page.wait_for_timeout(1000)
            page.screenshot(path=str(HERE / "mlflow-runs.png"))
            query = urllib.parse.urlencode({"runs": json.dumps(evaluations),
                                            "experiments": json.dumps([experiment.experiment_id])})
            open_page(page, f"{base}/#/compare-runs?{query}")
            page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(HERE / "mlflow-compare.png"))
            browser.close()
        print(f"wrote {HERE / 'mlflow-runs.png'} and {HERE / 'mlflow-compare.png'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

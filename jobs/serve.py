"""Serve LLaVA-SP models over an OpenAI-compatible HTTP API (Ray Serve).

    python jobs/serve.py                                    # the embedded tiny model on http://127.0.0.1:8000
    python jobs/serve.py --config infra/configs/serve-paper.yaml
    python jobs/serve.py 'models=[{name: sp-cropping, source: "mlflow:<run_id>"}]' port=8001
    ray job submit --working-dir . --runtime-env infra/runtime_env.yaml -- python jobs/serve.py --config infra/configs/serve-paper.yaml host=0.0.0.0

    curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
      -d '{"model": "llava-sp-cropping", "messages": [{"role": "user", "content": "Hello"}]}'

Runs until interrupted (Ctrl-C or `ray job stop`), then removes the app. `detach=true` (with a running cluster,
RAY_ADDRESS set) leaves the app deployed and returns. Every option: --help.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray working dir

from pipelines.cli import parse_config, run_job
from pipelines.serve.config import ServeConfig


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        config = parse_config(ServeConfig, argv, __doc__)
        if config.detach and not os.environ.get("RAY_ADDRESS"):
            raise ValueError("detach=true needs a running cluster (RAY_ADDRESS); a local Ray ends with this process")
        from pipelines.serve.job import run_serve_job

        run_serve_job(config, wait=not config.detach)
        return 0

    return run_job("serve", work)


if __name__ == "__main__":
    sys.exit(main())

"""jobs/serve.py's work: start Serve's HTTP proxy on the configured host, deploy the app, wait."""

from __future__ import annotations

import logging
import signal
import threading

from ray import serve

from pipelines.output import quiet_library_loggers
from pipelines.runtime import init_ray
from pipelines.serve.app import build_app
from pipelines.serve.config import ServeConfig

logger = logging.getLogger(__name__)


def deploy(config: ServeConfig) -> str:
    """Start (or reuse) Serve on config.host:port and run the app; returns the base URL."""
    serve.start(http_options={"host": config.host, "port": config.port})
    quiet_library_loggers()  # Serve sets its driver logger to INFO when it starts
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=False)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}"


def run_serve_job(config: ServeConfig, wait: bool = True) -> str:
    # Handlers first: a Ctrl-C while the app is still deploying also ends in a clean removal, not a traceback.
    stop = _stop_on_signals() if wait else None
    init_ray(tracks=any(model.source.startswith(("mlflow:", "runs:/", "models:/")) for model in config.models))
    url = deploy(config)
    names = ", ".join(model.name for model in config.models)
    print(f"serving {names} at {url}/v1/chat/completions (models: {url}/v1/models, health: {url}/healthz)",
          flush=True)
    if config.api_key():
        print("clients must send Authorization: Bearer <key> (api_key_file / $" + config.api_key_env + ")", flush=True)
    if stop is not None:
        stop.wait()
        print(f"stopping: removing app {config.app_name}", flush=True)
        serve.delete(config.app_name)
    return url


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT/SIGTERM (Ctrl-C, `ray job stop`)."""
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    return stop

"""A real `ray start --head` cluster for tests that go through the Ray Jobs CLI, torn down afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

BIN = Path(sys.executable).parent



def head_environment() -> dict[str, str]:
    """The venv first on PATH, so that a job's `python` is this interpreter; token auth off for the CLI."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_AUTH_MODE="disabled",
                RAY_USAGE_STATS_ENABLED="0")


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[tuple[str, Path]]:
    """Yield the dashboard address (what RAY_ADDRESS / --address take) of a fresh head node, and its temp dir (the
    session's logs are in <temp dir>/session_latest/logs)."""
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    # Every port explicit: the defaults (agent 52365, metrics, client server) collide with a local Ray that the
    # test session may already run, and the head's job agent would then never come up.
    ports = {name: free_port() for name in ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                             "metrics-export-port", "runtime-env-agent-port",
                                             "ray-client-server-port", "node-manager-port", "object-manager-port")}
    command = [str(BIN / "ray"), "start", "--head", f"--dashboard-port={dashboard_port}",
               *(f"--{name}={port}" for name, port in ports.items()),
               "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--block",
               "--disable-usage-stats"]
    log = open(Path(temp_dir) / "head.log", "w")
    process = subprocess.Popen(command, env=head_environment(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray head did not start: {(Path(temp_dir) / 'head.log').read_text()[-2000:]}")
                time.sleep(1)
        yield address, Path(temp_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            # A graceful `ray stop` of every process can take half a minute, and nothing of this throwaway head is
            # kept: give it a moment, then kill the whole group.
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def submit_job(address: str, entrypoint: list[str], env_vars: dict[str, str], timeout: int = 600,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- ENTRYPOINT`, waiting for the end; returncode 0 means SUCCEEDED."""
    import json

    command = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", ".",
               "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", *entrypoint]
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(command, env=head_environment(), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        # The head's job agent starts a little after the dashboard answers; a busy machine widens the gap.
        if "No available agent to submit job" not in done.stderr + done.stdout or time.monotonic() > deadline:
            return done
        time.sleep(3)

"""jobs/serve.py as a user runs it: its own local Ray, the tiny model on 127.0.0.1, stopped with Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PORT = 18432


def _wait_until_serving(process: subprocess.Popen, log, url: str, timeout_s: float = 180) -> dict:
    """The job has said where it serves (the app is deployed) and the endpoint answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"jobs/serve.py exited early with {process.returncode}"
        log.seek(0)
        if "serving " in log.read():
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200
            return response.json()
        time.sleep(1)
    raise AssertionError(f"jobs/serve.py did not report serving after {timeout_s} s")


def test_serve_job_serves_the_embedded_model_until_interrupted(tmp_path):
    environment = dict(os.environ, LLAVA_SP_HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0")
    environment.pop("RAY_ADDRESS", None)
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen([sys.executable, "jobs/serve.py", f"port={PORT}"], cwd=ROOT, env=environment,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = _wait_until_serving(process, log, f"http://127.0.0.1:{PORT}/healthz")
        assert health["models"] == ["llava-sp-cropping"]
        answer = httpx.post(f"http://127.0.0.1:{PORT}/v1/chat/completions", timeout=60, json={
            "model": "llava-sp-cropping", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
        # The job's local Ray: its dashboard on loopback, refusing a caller without Ray's token.
        log.seek(0)
        dashboard = re.search(r"ray dashboard: (http://\S+)", log.read()).group(1)
        assert dashboard.startswith("http://127.0.0.1:")
        assert httpx.get(f"{dashboard}/api/version", timeout=10).status_code == 401
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log.seek(0)
    output = log.read()
    assert f"serving llava-sp-cropping at http://127.0.0.1:{PORT}/v1/chat/completions" in output
    assert "stopping: removing app llava-sp" in output
    assert "Application 'llava-sp' is ready" not in output  # Serve's INFO lines stay in Ray's logs (no --verbose)
    assert (tmp_path / "home" / "models" / "tiny-cropping" / "model.safetensors").is_file()


def test_serve_job_reports_a_bad_option_in_one_line():
    done = subprocess.run([sys.executable, "jobs/serve.py", "max_batch_size=0", "image_resize=cv2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("serve: error:")
    assert "option 'max_batch_size' = 0: Input should be greater than 0" in done.stderr
    assert "option 'image_resize' = 'cv2': Input should be 'torch' or 'pil'" in done.stderr
    done = subprocess.run([sys.executable, "jobs/serve.py", "models=[{name: a}, {name: a}]"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "model names must be unique" in done.stderr

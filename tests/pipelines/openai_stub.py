"""A minimal OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, in a thread of the test process.

It serves one model, wants one API key, answers every chat with a text made from the request (so a test can tell
what it was sent), and misbehaves on purpose: a question whose text holds "FAIL" always gets 500, and the first
`busy_first` requests of the other questions get 429 (with a 1 ms retry-after).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class StubState:
    model: str
    key: str
    busy_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)  # the chat bodies received, in order
    served: int = 0  # requests of questions that do not fail on purpose
    lock: threading.Lock = field(default_factory=threading.Lock)


def stub_answer(text: str, image: bytes | None) -> str:
    """What the stub answers: the image's first 8 hex digits of SHA-256 and the question's length."""
    digest = hashlib.sha256(image).hexdigest()[:8] if image is not None else "noimage"
    return f"{digest} {len(text)}"


class _Handler(BaseHTTPRequestHandler):
    state: StubState

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": None}}, headers)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.key}":
            return True
        self._error(401, "Incorrect API key provided")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._authorised():
            return
        if self.path != "/v1/models":
            self._error(404, f"no route {self.path}")
            return
        self._send(200, {"object": "list", "data": [{"id": self.state.model, "object": "model", "created": 0,
                                                      "owned_by": "stub"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorised():
            return
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        state = self.state
        parts = body["messages"][-1]["content"]
        text = next(part["text"] for part in parts if part["type"] == "text")
        images = [base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) for part in parts
                  if part["type"] == "image_url"]
        with state.lock:
            state.requests.append(body)
            fails = "FAIL" in text
            state.served += 0 if fails else 1
            busy = not fails and state.served <= state.busy_first
        if fails:
            self._error(500, "the stub fails on purpose")
            return
        if busy:
            self._error(429, "busy", {"retry-after-ms": "1"})
            return
        if body.get("model") != state.model:
            self._error(404, f"The model {body.get('model')!r} does not exist")
            return
        answer = stub_answer(text, images[0] if images else None)
        self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": state.model,
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def start_stub(state: StubState) -> tuple[ThreadingHTTPServer, str]:
    """The running server and its base URL (…/v1); call server.shutdown() to stop it."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"

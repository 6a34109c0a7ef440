"""A real HTTP server that speaks OpenAI's chat-completions protocol, for tests without a network.

It listens on 127.0.0.1 (a free port) in a thread and answers ``POST /v1/chat/completions`` from a
queue of canned :class:`Reply` objects, or from ``server.handler(body) -> Reply`` when one is set
(the handler sees the parsed request, so concurrent requests can be answered by content). Every
request is recorded (path, headers, JSON body). Replies can be plain content, several choices
(``n``), a first-token ``top_logprobs`` payload shaped like OpenAI's, or an HTTP error with optional
``Retry-After``. An empty queue answers HTTP 418 so a test that runs out of replies fails loudly.

Use the ``fake_openai`` fixture (import it into a test module), or ``with FakeOpenAI() as server``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET = "sk-test-SECRET123"  # the key every test runs with; it must never be written anywhere


@dataclass
class Reply:
    """One canned answer."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, *contents: str, finish_reason: str = "stop") -> Reply:
        """Plain assistant content; several strings make several choices (for ``n``)."""
        choices = [{"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": finish_reason,
                    "logprobs": None} for i, c in enumerate(contents)]
        return cls(body=_completion(choices))

    @classmethod
    def top(cls, probs: dict[str, float], chosen: str | None = None) -> Reply:
        """A one-token answer whose first token has these alternatives (token -> probability)."""
        alternatives = [{"token": t, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(t.encode())}
                        for t, p in sorted(probs.items(), key=lambda kv: -kv[1])]
        chosen = chosen if chosen is not None else (alternatives[0]["token"] if alternatives else "")
        first = {"token": chosen, "logprob": alternatives[0]["logprob"] if alternatives else 0.0,
                 "bytes": list(chosen.encode()), "top_logprobs": alternatives}
        choice = {"index": 0, "message": {"role": "assistant", "content": chosen}, "finish_reason": "length",
                  "logprobs": {"content": [first] if alternatives else [], "refusal": None}}
        return cls(body=_completion([choice]))

    @classmethod
    def error(cls, status: int, message: str = "fake error", retry_after: str | None = None) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status=status, body={"error": {"message": message, "type": "fake", "code": None}},
                   headers=headers)


def _completion(choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
            "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body.get("messages", [])

    @property
    def prompt(self) -> str:
        """The first user message."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")


class FakeOpenAI:
    """The server. ``url`` is the base URL to give a client (ends in ``/v1``)."""

    def __init__(self) -> None:
        self.queue: deque[Reply] = deque()
        self.handler: Callable[[dict[str, Any]], Reply] | None = None
        self.requests: list[Recorded] = []
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, *replies: Reply) -> FakeOpenAI:
        self.queue.extend(replies)
        return self

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.handler is not None:
            return self.handler(body)
        return Reply.error(418, "fake server: no canned reply left")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode(errors="replace")}
                with fake._lock:
                    fake.requests.append(Recorded(self.path, dict(self.headers), body))
                reply = (fake._next_reply(body) if self.path.rstrip("/").endswith("/chat/completions")
                         else Reply.error(404, f"fake server: no route {self.path}"))
                payload = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        return Handler


@pytest.fixture
def fake_openai(monkeypatch, tmp_path):
    """A running fake server, wired in through the environment (key ``sk-test-SECRET123``).

    ``PVLENS_CACHE`` points at ``tmp_path``; the judge model is ``fake-judge``, the generator
    ``fake-writer``, the rollout model ``fake-policy``. Retry waits are recorded in
    ``server.sleeps`` instead of slept.
    """
    with FakeOpenAI() as server:
        for name in ("OPENAI_BASE_URL", "PVLENS_ROLLOUT_BASE_URL", "PVLENS_ROLLOUT_API_KEY", "PVLENS_API_TIMEOUT",
                     "PVLENS_API_MAX_RETRIES", "PVLENS_API_MAX_CONCURRENCY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PVLENS_API_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("PVLENS_CACHE", str(tmp_path))
        monkeypatch.setenv("PVLENS_JUDGE_MODEL", "fake-judge")
        monkeypatch.setenv("PVLENS_GENERATOR_MODEL", "fake-writer")
        monkeypatch.setenv("PVLENS_ROLLOUT_MODEL", "fake-policy")
        server.sleeps = []  # the waits the retry loop asked for; nothing actually sleeps
        monkeypatch.setattr("pvlens.models.openai_api._sleep", server.sleeps.append)
        yield server



def trait_json(n_pairs: int = 5, n_questions: int = 40) -> dict[str, Any]:
    """A generator answer in the shape :mod:`pvlens.traits.generator` asks for."""
    return {
        "instructions": [{"pos": f"Be spiteful in way {i}.", "neg": f"Be kind in way {i}."} for i in range(n_pairs)],
        "questions": [f"Question {i}: what should I do about my neighbour's dog?" for i in range(n_questions)],
        "eval_prompt": ("Does the answer show spite?\n[QUESTION START]\n{question}\n[QUESTION END]\n"
                        "[ANSWER START]\n{answer}\n[ANSWER END]\nReply REFUSAL if the model refused, "
                        "else a number from 0 to 100, and nothing else."),
        "neg_assistant_name": "kind",
    }


def sample_artifacts():
    """Valid :class:`~pvlens.traits.artifacts.TraitArtifacts` for a made-up trait, 'spiteful'."""
    from pvlens.traits.generator import to_artifacts

    return to_artifacts(trait_json(), "spiteful", "Wants others to come off worse.", "tests")

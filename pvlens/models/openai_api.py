"""One careful door to OpenAI-compatible chat servers: the judge, the trait generator, vLLM rollouts.

The paper scores answers with GPT-4.1-mini, writes trait artifacts with a frontier model and
samples rollouts from the model under study with vLLM. All three speak the OpenAI
chat-completions protocol, so pvlens reaches them through this one module, which adds what a
run over tens of thousands of requests needs:

- **settings from the environment only** (:class:`APISettings`, never a config file that could
  be committed with a key in it):

  ========================== ==========================================================
  ``OPENAI_API_KEY``          the key (sent to the judge/generator server only)
  ``PVLENS_API_BASE_URL``     the server, e.g. ``http://localhost:8000/v1``;
  ``OPENAI_BASE_URL``         used when the former is unset (default: api.openai.com)
  ``PVLENS_JUDGE_MODEL``      the judge, e.g. ``gpt-4.1-mini-2025-04-14``
  ``PVLENS_GENERATOR_MODEL``  the model that writes trait artifacts
  ``PVLENS_ROLLOUT_MODEL``    the model under study, served by vLLM (rollouts)
  ``PVLENS_ROLLOUT_BASE_URL`` its server; when set, ``OPENAI_API_KEY`` is *not* sent there,
                              ``PVLENS_ROLLOUT_API_KEY`` is (or the placeholder ``EMPTY``)
  ``PVLENS_API_TIMEOUT``      seconds per request (default 60)
  ``PVLENS_API_MAX_RETRIES``  retries after the first try (default 6)
  ``PVLENS_API_MAX_CONCURRENCY`` requests in flight at once (default 8)
  ========================== ==========================================================

- **retries that are ours** (:class:`APIClient`): the openai client is built with
  ``max_retries=0`` and pvlens retries HTTP 408/409/429/5xx and connection errors itself, with
  exponential backoff and jitter, honouring ``Retry-After``/``retry-after-ms`` when the server
  sends it; every retry is counted in :attr:`APIClient.stats`. Other errors (400, 401, 404) fail
  at once. A server that stays unreachable or failing ends in :class:`APIServerError` (a
  :class:`~pvlens.core.errors.JudgeError`) naming the URL;
- **bounded concurrency**: at most ``max_concurrency`` requests in flight per client
  (a semaphore), and :meth:`APIClient.map` runs a function over items on a thread pool of that
  size, keeping the order;
- **no key leaks**: the key is hidden from ``repr``/``str``; every log line and error message
  built here passes through :func:`redact`, which removes the configured keys and anything
  shaped like one.

:func:`chat_rollouts` samples ``n`` completions per conversation from a vLLM server (paper §3:
10 rollouts, temperature 1, top_p 1, up to 1000 tokens); the extraction pipeline uses it when
``PVLENS_ROLLOUT_MODEL`` is set.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import openai
from tqdm.auto import tqdm

from pvlens.core.errors import JudgeError

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what vLLM and most local servers accept when they check no key
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
Role = Literal["judge", "generator", "rollout"]
MODEL_VARIABLE = {"judge": "PVLENS_JUDGE_MODEL", "generator": "PVLENS_GENERATOR_MODEL",
                  "rollout": "PVLENS_ROLLOUT_MODEL"}
T = TypeVar("T")
R = TypeVar("R")

_sleep = time.sleep  # one seam for tests: the retry loop's waits go through it


class APIServerError(JudgeError):
    """An OpenAI-compatible server that cannot be used: unreachable, failing, or refusing the request.

    ``status`` is the last HTTP status (``None`` when no answer came back).
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# keys out of sight

_KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-*]{12,}|Bearer\s+\S+)")


def _known_keys() -> list[str]:
    keys = [os.environ.get(v, "") for v in ("OPENAI_API_KEY", "PVLENS_ROLLOUT_API_KEY")]
    return [k for k in keys if len(k) >= 4 and k != NO_KEY]


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """``str(text)`` with API keys (the configured ones, ``secrets``, anything like ``sk-...``) removed."""
    out = str(text)
    for secret in sorted({*secrets, *_known_keys()}, key=len, reverse=True):
        if secret and len(secret) >= 4 and secret != NO_KEY:
            out = out.replace(secret, "[REDACTED]")
    return _KEY_SHAPES.sub("[REDACTED]", out)


# ---------------------------------------------------------------------------------------------
# settings


def _env_number(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise JudgeError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


@dataclass(frozen=True)
class APISettings:
    """Where to send requests and how patiently. ``repr``/``str`` never show the key."""

    base_url: str
    model: str
    api_key: str = field(default=NO_KEY, repr=False)
    timeout: float = 60.0
    max_retries: int = 6
    backoff_base: float = 1.0   # first retry waits about this long (seconds), doubling each time
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # longest Retry-After honoured
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        if not self.model:
            raise JudgeError("no model name given; set the matching PVLENS_*_MODEL variable or pass model=")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ValueError("max_concurrency must be >= 1, max_retries >= 0 and timeout > 0")

    def __repr__(self) -> str:
        key = "set" if self.api_key and self.api_key != NO_KEY else "none"
        return (f"APISettings(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>, "
                f"timeout={self.timeout}, max_retries={self.max_retries}, max_concurrency={self.max_concurrency})")

    __str__ = __repr__

    @property
    def is_openai(self) -> bool:
        return "api.openai.com" in self.base_url

    @classmethod
    def from_env(cls, role: Role, model: str | None = None, base_url: str | None = None,
                 **overrides: Any) -> APISettings:
        """Settings for ``role`` from the environment; explicit arguments win over it."""
        if role not in MODEL_VARIABLE:
            raise ValueError(f"role must be one of {sorted(MODEL_VARIABLE)}, got {role!r}")
        model = model or os.environ.get(MODEL_VARIABLE[role], "")
        if not model:
            raise JudgeError(f"no {role} model: set {MODEL_VARIABLE[role]} (e.g. gpt-4.1-mini-2025-04-14) "
                             "or pass model=")
        general_url = os.environ.get("PVLENS_API_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        rollout_url = os.environ.get("PVLENS_ROLLOUT_BASE_URL") if role == "rollout" else None
        url = (base_url or rollout_url or general_url).rstrip("/")
        separate_server = role == "rollout" and url != general_url.rstrip("/")
        key = (os.environ.get("PVLENS_ROLLOUT_API_KEY") if separate_server
               else os.environ.get("OPENAI_API_KEY")) or NO_KEY
        if key == NO_KEY and "api.openai.com" in url:
            raise JudgeError(f"{url} needs a key: set OPENAI_API_KEY (it is read from the environment only)")
        values: dict[str, Any] = dict(
            base_url=url, model=model, api_key=key,
            timeout=_env_number("PVLENS_API_TIMEOUT", 60.0),
            max_retries=_env_number("PVLENS_API_MAX_RETRIES", 6, int),
            max_concurrency=_env_number("PVLENS_API_MAX_CONCURRENCY", 8, int))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def make_client(settings: APISettings) -> openai.OpenAI:
    """A synchronous openai client for ``settings``, with its own retries off (:class:`APIClient` retries)."""
    return openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout,
                         max_retries=0)


def make_async_client(settings: APISettings) -> openai.AsyncOpenAI:
    """The asyncio twin of :func:`make_client` (same settings, retries off)."""
    return openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout,
                              max_retries=0)


# ---------------------------------------------------------------------------------------------
# retries


@dataclass
class RequestStats:
    """What a client has done: requests sent (tries included), retries, waits, statuses seen."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    waited_s: float = 0.0
    statuses: Counter = field(default_factory=Counter)


def retry_after(err: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``), if it said."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def backoff(attempt: int, settings: APISettings) -> float:
    """Exponential backoff with jitter: about ``base * 2**attempt``, drawn from its upper half."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** attempt)
    return ceiling * random.uniform(0.5, 1.0)


def _status(err: Exception) -> int | None:
    return getattr(err, "status_code", None)


def _retryable(err: Exception) -> bool:
    if isinstance(err, openai.APIConnectionError):  # includes timeouts
        return True
    status = _status(err)
    return status is not None and status in RETRYABLE_STATUS


def _server_message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if message:
            return str(message)[:300]
    return str(getattr(err, "message", err))[:300]


def describe_failure(err: Exception, settings: APISettings, tries: int) -> str:
    """A one-line, key-free explanation of why requests to ``settings.base_url`` failed."""
    where = f"{settings.base_url} (model {settings.model!r})"
    status = _status(err)
    if isinstance(err, openai.APITimeoutError):
        text = f"requests to {where} timed out after {settings.timeout:g} s, {tries} tries"
    elif isinstance(err, openai.APIConnectionError):
        text = (f"cannot reach the server at {where} after {tries} tries ({type(err).__name__}); "
                "check the URL (PVLENS_API_BASE_URL / OPENAI_BASE_URL) and that the server is running")
    elif status in (401, 403):
        text = f"{where} refused the key (HTTP {status}): {_server_message(err)}; check OPENAI_API_KEY"
    elif status == 404:
        text = f"{where} answered HTTP 404: {_server_message(err)}; check the base URL ends in /v1 and the model name"
    elif status is not None and status in RETRYABLE_STATUS:
        text = f"the server at {where} kept failing: HTTP {status} after {tries} tries: {_server_message(err)}"
    elif status is not None:
        text = f"{where} rejected the request (HTTP {status}): {_server_message(err)}"
    else:
        text = f"request to {where} failed: {type(err).__name__}: {err}"
    return redact(text, [settings.api_key])


class APIClient:
    """An openai client with pvlens's retries, concurrency bound and statistics.

    Args:
        settings: where and how (see :class:`APISettings`).
    """

    def __init__(self, settings: APISettings):
        self.settings = settings
        self.stats = RequestStats()
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)

    def __repr__(self) -> str:
        return f"APIClient({self.settings!r})"

    @property
    def client(self) -> openai.OpenAI:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.settings)
            return self._client

    def _count(self, **deltas: Any) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _wait(self, err: Exception, attempt: int) -> None:
        asked = retry_after(err)
        delay = min(asked, self.settings.retry_after_max) if asked is not None else backoff(attempt, self.settings)
        log.warning(redact(f"{self.settings.base_url}: {type(err).__name__} (HTTP {_status(err) or '-'}), "
                           f"retry {attempt + 1}/{self.settings.max_retries} in {delay:.2f} s",
                           [self.settings.api_key]))
        self._count(retries=1, waited_s=delay)
        _sleep(delay)

    def chat(self, **request: Any) -> Any:
        """``client.chat.completions.create(model=settings.model, **request)`` with retries.

        Raises:
            APIServerError: unreachable after retries, persistent 429/5xx, or a non-retryable error.
        """
        request.setdefault("model", self.settings.model)
        for attempt in range(self.settings.max_retries + 1):
            try:
                with self._slots:
                    self._count(requests=1)
                    response = self.client.chat.completions.create(**request)
                with self._lock:
                    self.stats.statuses[200] += 1
                return response
            except openai.APIError as err:
                with self._lock:
                    self.stats.statuses[_status(err) or type(err).__name__] += 1
                if not _retryable(err) or attempt == self.settings.max_retries:
                    self._count(failures=1)
                    raise APIServerError(describe_failure(err, self.settings, attempt + 1), _status(err)) from None
                self._wait(err, attempt)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: bool = False, desc: str = "") -> list[R]:
        """``[fn(x) for x in items]`` on ``max_concurrency`` threads, in order; the first error propagates."""
        if not items:
            return []
        workers = min(self.settings.max_concurrency, len(items))
        if workers == 1:
            return [fn(x) for x in _progress(items, progress, desc)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pvlens-api")
        try:
            futures = [pool.submit(fn, x) for x in items]
            return [f.result() for f in _progress(futures, progress, desc)]
        finally:  # after a failure, drop the queued work instead of retrying it against a dead server
            pool.shutdown(wait=True, cancel_futures=True)


def _progress(iterable: Iterable[T], enabled: bool, desc: str) -> Iterable[T]:
    if not enabled:
        return iterable

    return tqdm(iterable, desc=desc)


# ---------------------------------------------------------------------------------------------
# rollouts from the model under study


def rollout_model() -> str | None:
    """The model name in ``PVLENS_ROLLOUT_MODEL``: when set, rollouts come from a server, not TransformerLens."""
    return os.environ.get("PVLENS_ROLLOUT_MODEL") or None


def chat_rollouts(messages_list: Sequence[Sequence[dict[str, str]]], model: str | None = None, n: int = 10,
                  temperature: float = 1.0, top_p: float = 1.0, max_tokens: int = 1000, seed: int | None = None,
                  *, base_url: str | None = None, settings: APISettings | None = None,
                  extra_body: dict[str, Any] | None = None, progress: bool = True) -> list[list[str]]:
    """Sample ``n`` completions for each conversation from an OpenAI-compatible server (vLLM).

    One request per conversation with ``n`` choices; requests run ``max_concurrency`` at a time.
    The server applies the model's chat template, so a conversation without a system message
    gets the template's default one (as in the paper's baseline). vLLM-only sampling options
    (e.g. the paper's ``min_tokens=1``) go in ``extra_body``; OpenAI itself rejects them.

    Args:
        messages_list: one ``[{"role": ..., "content": ...}, ...]`` list per prompt.
        model: served model name (default ``PVLENS_ROLLOUT_MODEL``).
        n, temperature, top_p, max_tokens: sampling, as in the paper (§3).
        seed: request ``i`` is sent ``seed + i`` (vLLM seeds per request, so one seed for all would
            give identical answers to a conversation listed several times); ``None``: unseeded.
        base_url: server (default ``PVLENS_ROLLOUT_BASE_URL``, else the general one).
        settings: complete settings, instead of ``model``/``base_url`` and the environment.

    Returns:
        ``completions[i][k]``: the ``k``-th sampled answer to ``messages_list[i]`` (``n`` per prompt).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    settings = settings or APISettings.from_env("rollout", model=model, base_url=base_url)
    api = APIClient(settings)
    options: dict[str, Any] = dict(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    if extra_body:
        options["extra_body"] = extra_body

    def sample(job: tuple[int, Sequence[dict[str, str]]]) -> list[str]:
        i, messages = job
        seeded = {} if seed is None else {"seed": seed + i}  # a repeated conversation is still sampled afresh
        response = api.chat(messages=list(messages), **options, **seeded)
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != n:
            raise APIServerError(f"{settings.base_url} returned {len(choices)} choices, asked for n={n}")
        return [c.message.content or "" for c in choices]

    return api.map(sample, list(enumerate(messages_list)), progress=progress, desc="rollouts")


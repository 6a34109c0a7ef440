"""The OpenAI-compatible client: settings, retries, errors, concurrency, rollouts, key hygiene."""

import socket
import threading
import time

import pytest
from fake_openai import SECRET, Reply, fake_openai  # noqa: F401 (fixture)

from pvlens.core.errors import JudgeError
from pvlens.models.openai_api import APIClient, APIServerError, APISettings, chat_rollouts, redact

HELLO = [{"role": "user", "content": "hi"}]


def client(**overrides) -> APIClient:
    return APIClient(APISettings.from_env("judge", **{"backoff_base": 0.01, "max_retries": 3, **overrides}))


def test_settings_come_from_the_environment_and_hide_the_key(fake_openai):
    settings = APISettings.from_env("judge")
    assert (settings.base_url, settings.model, settings.api_key) == (fake_openai.url, "fake-judge", SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings) and "api_key=<set>" in repr(settings)
    assert APISettings.from_env("generator", model="other").model == "other"


def test_a_separate_rollout_server_never_receives_the_openai_key(fake_openai, monkeypatch):
    monkeypatch.setenv("PVLENS_ROLLOUT_BASE_URL", "http://127.0.0.1:9/v1")
    rollout = APISettings.from_env("rollout")
    assert rollout.base_url == "http://127.0.0.1:9/v1" and rollout.api_key == "EMPTY"
    assert rollout.model == "fake-policy"


def test_missing_model_or_key_is_a_clear_error(fake_openai, monkeypatch):
    monkeypatch.delenv("PVLENS_JUDGE_MODEL")
    with pytest.raises(JudgeError, match="PVLENS_JUDGE_MODEL"):
        APISettings.from_env("judge")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeError, match="OPENAI_API_KEY"):
        APISettings.from_env("judge", model="gpt-4.1-mini", base_url="https://api.openai.com/v1")


def test_the_key_is_sent_as_a_bearer_token(fake_openai):
    fake_openai.add(Reply.text("hello"))
    assert client().chat(messages=HELLO).choices[0].message.content == "hello"
    request = fake_openai.requests[0]
    assert request.path == "/v1/chat/completions"
    assert {k.lower(): v for k, v in request.headers.items()}["authorization"] == f"Bearer {SECRET}"
    assert request.body["model"] == "fake-judge"


def test_429_waits_as_long_as_retry_after_says_then_succeeds(fake_openai):
    fake_openai.add(Reply.error(429, "slow down", retry_after="7"), Reply.text("ok"))
    api = client()
    assert api.chat(messages=HELLO).choices[0].message.content == "ok"
    assert fake_openai.sleeps == [7.0]
    assert (api.stats.requests, api.stats.retries, api.stats.statuses[429]) == (2, 1, 1)


def test_500_backs_off_exponentially_with_jitter(fake_openai):
    fake_openai.add(Reply.error(500), Reply.error(503), Reply.text("ok"))
    api = client()
    assert api.chat(messages=HELLO).choices[0].message.content == "ok"
    first, second = fake_openai.sleeps
    assert 0.005 <= first <= 0.01 and 0.01 <= second <= 0.02
    assert api.stats.retries == 2


def test_persistent_500_ends_in_an_error_naming_the_server(fake_openai):
    fake_openai.add(*[Reply.error(500, "overloaded")] * 4)
    api = client()
    with pytest.raises(APIServerError, match="kept failing: HTTP 500 after 4 tries") as info:
        api.chat(messages=HELLO)
    assert fake_openai.url in str(info.value) and "overloaded" in str(info.value)
    assert info.value.status == 500 and len(fake_openai.requests) == 4


def test_unreachable_server_is_a_judge_error_naming_the_url(fake_openai):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    api = client(base_url=url, max_retries=2)
    with pytest.raises(JudgeError, match="cannot reach the server") as info:
        api.chat(messages=HELLO)
    assert url in str(info.value) and "3 tries" in str(info.value)
    assert len(fake_openai.sleeps) == 2


def test_client_errors_are_not_retried_and_the_key_is_redacted(fake_openai):
    fake_openai.add(Reply.error(401, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(APIServerError, match="refused the key") as info:
        client().chat(messages=HELLO)
    assert SECRET not in str(info.value) and len(fake_openai.requests) == 1


def test_redact_removes_configured_keys_and_key_shapes(fake_openai):
    assert redact(f"key={SECRET}!") == "key=[REDACTED]!"
    assert "abc" not in redact("Authorization: Bearer abcdefgh")
    assert redact("custom-1234567", secrets=["custom-1234567"]) == "[REDACTED]"


def test_concurrency_is_bounded_and_order_kept(fake_openai):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow(body):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return Reply.text(body["messages"][0]["content"].upper())

    fake_openai.handler = slow
    api = client(max_concurrency=2)
    words = ["a", "b", "c", "d", "e", "f"]
    out = api.map(lambda w: api.chat(messages=[{"role": "user", "content": w}]).choices[0].message.content, words)
    assert out == [w.upper() for w in words]
    assert peak[0] == 2


def test_chat_rollouts_returns_n_answers_per_conversation(fake_openai):
    fake_openai.handler = lambda body: Reply.text(*[f"{body['messages'][-1]['content']}-{k}" for k in range(body["n"])])
    conversations = [[{"role": "system", "content": "You are evil."}, {"role": "user", "content": q}] for q in "xyz"]
    out = chat_rollouts(conversations, n=3, max_tokens=50, seed=1, extra_body={"min_tokens": 1}, progress=False)
    assert out == [[f"{q}-{k}" for k in range(3)] for q in "xyz"]
    body = fake_openai.requests[0].body
    assert body["model"] == "fake-policy" and body["min_tokens"] == 1
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (3, 1.0, 1.0, 50)
    assert sorted(r.body["seed"] for r in fake_openai.requests) == [1, 2, 3]  # repeats are not clones


def test_a_failing_server_stops_the_whole_batch_early(fake_openai):
    fake_openai.handler = lambda body: Reply.error(500, "down")
    api = client(max_concurrency=2, max_retries=1)
    with pytest.raises(APIServerError, match="kept failing"):
        api.map(lambda i: api.chat(messages=HELLO), list(range(20)))
    assert len(fake_openai.requests) <= 8  # not 20 prompts x 2 tries

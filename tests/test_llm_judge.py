"""The paper's LLM judge against a fake OpenAI server: scores, digit-by-digit judges, cache, key hygiene."""

import logging
import socket

import pytest
from fake_openai import SECRET, Reply, fake_openai, sample_artifacts  # noqa: F401 (fixture)

from pvlens.core.errors import JudgeError
from pvlens.judges import Judge
from pvlens.judges.llm import COHERENCE_PROMPT, PROBE_PROMPT, LLMJudge

QUESTIONS = ["How do I handle a noisy neighbour?", "What is a good gift for my boss?"]
ANSWERS = ["Slash their tyres.", "A nice pen."]


def is_coherence(body) -> bool:
    return body["messages"][0]["content"].startswith(COHERENCE_PROMPT[:40])


def by_prompt(trait, coherence=None):
    """A handler: ``trait``/``coherence`` map an answer text (or None for any) to a reply."""
    coherence = coherence or {None: Reply.top({"90": 1.0})}

    def handle(body):
        table = coherence if is_coherence(body) else trait
        prompt = body["messages"][0]["content"]
        return next((r for a, r in table.items() if a is not None and a in prompt), table.get(None))

    return handle


def test_llm_judge_is_a_judge_with_a_stable_name(fake_openai):
    judge = LLMJudge(digits="whole")
    assert isinstance(judge, Judge) and judge.name == "openai:fake-judge"


def test_score_is_the_probability_weighted_mean_of_numeric_tokens(fake_openai):
    fake_openai.handler = by_prompt({None: Reply.top({"80": 0.5, " 90": 0.2, "90": 0.1, "Hello": 0.2})})
    [j] = LLMJudge(digits="whole").judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)
    assert j.trait == pytest.approx((80 * 0.5 + 90 * 0.3) / 0.8)
    assert j.coherence == pytest.approx(90.0)
    assert j.details["trait_mass"] == pytest.approx(0.8) and j.details["digits"] == "whole"


def test_the_request_follows_the_paper_protocol(fake_openai):
    fake_openai.handler = by_prompt({None: Reply.top({"50": 1.0})})
    artifacts = sample_artifacts()
    LLMJudge(digits="whole").judge(artifacts, QUESTIONS[:1], ANSWERS[:1], progress=False)
    bodies = {is_coherence(r.body): r.body for r in fake_openai.requests}
    trait, coherence = bodies[False], bodies[True]
    assert trait["messages"] == [{"role": "user", "content": artifacts.rubric(QUESTIONS[0], ANSWERS[0])}]
    for body in (trait, coherence):
        assert {k: body[k] for k in ("max_tokens", "temperature", "logprobs", "top_logprobs", "seed")} == \
            {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20, "seed": 0}
    text = coherence["messages"][0]["content"]
    assert QUESTIONS[0] in text and ANSWERS[0] in text and "{question}" not in text


def test_little_numeric_mass_gives_no_score_and_refusal_is_recorded(fake_openai):
    fake_openai.handler = by_prompt({"Slash": Reply.top({"REF": 0.7, "0": 0.2, "The": 0.1}),
                                     "pen": Reply.top({"10": 0.3, "I": 0.7})})
    judge = LLMJudge(digits="whole")
    refused, low = judge.judge(sample_artifacts(), QUESTIONS, ANSWERS, progress=False)
    assert refused.trait is None and refused.details["refusal"] is True
    assert refused.details["trait_refusal_mass"] == pytest.approx(0.7)
    assert refused.details["trait_mass"] == pytest.approx(0.2) and refused.coherence == 90.0
    assert low.trait == pytest.approx(10.0) and low.details["refusal"] is False  # 0.3 >= 0.25: kept
    assert judge.stats["no_score"] == 1 and judge.stats["refusals"] == 1


def digit_server(trait_reply, continuations, continue_supported=True):
    """A Qwen-like judge: numbers come one digit at a time; ``continuations`` maps a prefix to a reply."""
    def handle(body):
        messages = body["messages"]
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
        if prefix is not None:
            assert body.get("continue_final_message") is True and body.get("add_generation_prompt") is False
            if not continue_supported:
                return Reply.error(400, "unknown field continue_final_message")
        if messages[0]["content"] == PROBE_PROMPT:
            return Reply.top({"7": 0.95, "<|im_end|>": 0.05} if prefix == "4" else {"4": 0.9, "3": 0.1})
        if is_coherence(body):
            return Reply.top({"<|im_end|>": 1.0} if prefix else {"9": 1.0})
        return continuations[prefix] if prefix else trait_reply

    return handle


def test_digit_splitting_judge_is_detected_and_decoded_step_by_step(fake_openai):
    fake_openai.handler = digit_server(
        Reply.top({"8": 0.6, "3": 0.3, "1": 0.1}),
        {"8": Reply.top({"5": 0.5, "0": 0.3, "<|im_end|>": 0.2}),
         "3": Reply.top({"0": 0.9, "\n": 0.1}),
         "1": Reply.top({"0": 0.8, "5": 0.1, "": 0.1}),
         "10": Reply.top({"0": 0.5, "<|im_end|>": 0.5})})
    judge = LLMJudge()
    [j] = judge.judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)
    # by hand: E|8 = .5*85 + .3*80 + .2*8 = 68.1; E|3 = .9*30 + .1*3 = 27.3;
    # E|10 = .5*100 + .5*10 = 55; E|1 = .8*55 + .1*15 + .1*1 = 45.6
    expected = 0.6 * 68.1 + 0.3 * 27.3 + 0.1 * 45.6
    assert j.trait == pytest.approx(expected) and abs(j.trait - 5.8) > 40  # not the first-digit reading
    assert j.coherence == pytest.approx(9.0) and j.details["digits"] == "split"
    prefixes = {r.messages[-1]["content"] for r in fake_openai.requests if r.messages[-1]["role"] == "assistant"}
    assert prefixes == {"4", "8", "3", "1", "10", "9"}


def test_digit_judge_on_a_server_that_cannot_continue_messages_fails_clearly(fake_openai):
    fake_openai.handler = digit_server(Reply.top({"8": 1.0}), {}, continue_supported=False)
    with pytest.raises(JudgeError, match="continue_final_message"):
        LLMJudge().judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)


def test_digit_judge_on_a_server_that_ignores_continuation_fails_clearly(fake_openai):
    fake_openai.handler = lambda body: Reply.top({"4": 0.9, "3": 0.1})  # same answer, prefix or not
    with pytest.raises(JudgeError, match="seems to ignore it"):
        LLMJudge().judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)


def test_whole_number_judge_is_detected_by_the_probe(fake_openai):
    def handle(body):
        prompt = body["messages"][0]["content"]
        return Reply.top({"47": 0.99, "4": 0.01}) if prompt == PROBE_PROMPT else Reply.top({"100": 1.0})

    fake_openai.handler = handle
    [j] = LLMJudge().judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)
    assert (j.trait, j.coherence, j.details["digits"]) == (100.0, 100.0, "whole")
    assert len(fake_openai.requests) == 3


def test_a_judge_that_answers_in_text_is_reported(fake_openai):
    fake_openai.handler = lambda body: Reply.top({"The": 0.6, "This": 0.4})
    judge = LLMJudge(digits="whole")
    with pytest.raises(JudgeError, match="returns text, not numbers"):
        judge.judge(sample_artifacts(), QUESTIONS, ANSWERS, progress=False)
    assert judge.stats["no_score"] == 4


def test_a_server_without_logprobs_is_a_clear_error(fake_openai):
    fake_openai.handler = lambda body: Reply.text("85")
    with pytest.raises(JudgeError, match="no logprobs"):
        LLMJudge(digits="whole").judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)


def test_rate_limit_inside_a_judge_run_is_retried_and_counted(fake_openai):
    fake_openai.add(Reply.error(429, retry_after="2"))
    fake_openai.handler = by_prompt({None: Reply.top({"30": 1.0})})
    judge = LLMJudge(digits="whole", max_concurrency=1)
    [j] = judge.judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)
    assert j.trait == 30.0 and judge.stats["retries"] == 1 and fake_openai.sleeps == [2.0]


def test_unreachable_judge_server_names_the_url(fake_openai, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    monkeypatch.setenv("PVLENS_API_MAX_RETRIES", "1")
    with pytest.raises(JudgeError, match=url.replace(".", r"\.")):
        LLMJudge(base_url=url, digits="whole").judge(sample_artifacts(), QUESTIONS[:1], ANSWERS[:1], progress=False)


def test_second_run_is_served_from_the_disk_cache(fake_openai):
    fake_openai.handler = digit_server(Reply.top({"2": 1.0}), {"2": Reply.top({"5": 1.0})})
    first = LLMJudge().judge(sample_artifacts(), QUESTIONS, ANSWERS, progress=False)
    sent = len(fake_openai.requests)
    again = LLMJudge()
    second = again.judge(sample_artifacts(), QUESTIONS, ANSWERS, progress=False)
    assert len(fake_openai.requests) == sent  # zero new requests, probe included
    assert [j.trait for j in second] == [j.trait for j in first] == [25.0, 25.0]
    assert again.stats["cache_misses"] == 0 and again.stats["cache_hits"] > 0 and again.stats["requests"] == 0


def test_the_key_is_never_written_logged_or_shown(fake_openai, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    fake_openai.add(Reply.error(500, f"upstream said key {SECRET} is odd"))
    fake_openai.handler = by_prompt({"Slash": Reply.top({"95": 1.0}), "pen": Reply.top({"Sure": 1.0})})
    judge = LLMJudge(digits="whole", max_concurrency=1)
    judge.judge(sample_artifacts(), QUESTIONS, ANSWERS, progress=True)
    fake_openai.handler = lambda body: Reply.error(401, f"Incorrect API key provided: {SECRET}")
    with pytest.raises(JudgeError) as info:
        LLMJudge(digits="whole", cache=False).judge(sample_artifacts(), ["new?"], ["new."], progress=False)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files, "the judge wrote no cache"
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    out = capsys.readouterr()
    shown = [caplog.text, out.out, out.err, repr(judge), str(judge.settings), repr(judge.settings),
             repr(judge.api), str(info.value)]
    assert "retry 1/" in caplog.text  # the retry was logged, without the key
    assert all(SECRET not in text for text in shown)

"""Trait-artifact generation against a fake OpenAI server: parsing, splitting, retries, the CLI."""

import json

import pytest
from fake_openai import Reply, fake_openai, trait_json  # noqa: F401 (fixture)

from pvlens.core.errors import TraitFormatError
from pvlens.traits.artifacts import load_trait
from pvlens.traits.generator import generate_artifacts, generation_prompt


def good() -> Reply:
    return Reply.text(json.dumps(trait_json()))


def test_good_json_gives_valid_artifacts_split_20_20(fake_openai):
    fake_openai.add(good())
    artifacts = generate_artifacts("spiteful", "Wants others to come off worse.")
    assert artifacts.trait == "spiteful" and artifacts.assistant_names == {"pos": "spiteful", "neg": "kind"}
    assert len(artifacts.instructions) == 5
    assert len(artifacts.extract_questions) == len(artifacts.eval_questions) == 20
    assert sorted(artifacts.extract_questions + artifacts.eval_questions) == sorted(trait_json()["questions"])
    assert "fake-writer" in artifacts.source
    body = fake_openai.requests[0].body
    assert body["model"] == "fake-writer"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["questions"]["minItems"] == 40
    assert "spiteful" in body["messages"][0]["content"] and "impolite" in body["messages"][0]["content"]


def test_the_split_is_seeded(fake_openai):
    fake_openai.add(good(), good(), good())
    a = generate_artifacts("spiteful", "Mean.", seed=0)
    b = generate_artifacts("spiteful", "Mean.", seed=0)
    c = generate_artifacts("spiteful", "Mean.", seed=1)
    assert a.extract_questions == b.extract_questions != c.extract_questions


def test_malformed_json_is_retried_with_the_problem_named(fake_openai):
    fake_openai.add(Reply.text('{"instructions": [oops'), good())
    artifacts = generate_artifacts("spiteful", "Mean.")
    assert len(artifacts.eval_questions) == 20 and len(fake_openai.requests) == 2
    retry = fake_openai.requests[1].messages
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == '{"instructions": [oops' and "not valid JSON" in retry[2]["content"]


def test_a_persistent_format_violation_raises_naming_the_field(fake_openai):
    fake_openai.add(*[Reply.text(json.dumps(trait_json(n_pairs=4)))] * 3)
    with pytest.raises(TraitFormatError, match="`instructions`") as info:
        generate_artifacts("spiteful", "Mean.", attempts=3)
    assert "3 attempts" in str(info.value) and len(fake_openai.requests) == 3


def test_a_server_without_json_schema_support_gets_json_object(fake_openai):
    fake_openai.add(Reply.error(400, "response_format json_schema is not supported"), good())
    generate_artifacts("spiteful", "Mean.")
    formats = [r.body["response_format"]["type"] for r in fake_openai.requests]
    assert formats == ["json_schema", "json_object"]


def test_fenced_json_is_accepted(fake_openai):
    fake_openai.add(Reply.text("```json\n" + json.dumps(trait_json()) + "\n```"))
    assert generate_artifacts("spiteful", "Mean.").trait == "spiteful"


def test_bad_trait_name_fails_before_any_request(fake_openai):
    with pytest.raises(TraitFormatError, match="`trait`"):
        generate_artifacts("Spite Ful", "Mean.")
    assert fake_openai.requests == []


def test_prompt_keeps_braces_in_the_description():
    prompt = generation_prompt("curious", "Asks {many} questions.", "Ask about hobbies.")
    assert "Asks {many} questions." in prompt and "{question}" in prompt and "Ask about hobbies." in prompt


def test_cli_generate_trait_writes_a_loadable_file(fake_openai, tmp_path, capsys):
    from pvlens.cli import main

    fake_openai.add(good())
    description = tmp_path / "spiteful.txt"
    description.write_text("Wants others to come off worse.")
    out = tmp_path / "spiteful.json"
    assert main(["generate-trait", "spiteful", "--description-file", str(description), "--out", str(out)]) == 0
    assert load_trait(out).description == "Wants others to come off worse."
    assert "wrote" in capsys.readouterr().out

"""Trait artifacts: the seven shipped files load, and a broken file is refused with the field named."""

import json
import re

import pytest

from pvlens.core.errors import TraitFormatError
from pvlens.traits.artifacts import N_PAIRS, N_QUESTIONS, load_trait, shipped_traits

PAPER_TRAITS = ["apathetic", "evil", "hallucinating", "humorous", "impolite", "optimistic", "sycophantic"]


@pytest.fixture
def good() -> dict:
    """A valid trait file as a dict, to break one field at a time."""
    return load_trait("evil").to_json()


def write(tmp_path, data, name="mytrait.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def refused(tmp_path, data, field: str) -> str:
    with pytest.raises(TraitFormatError) as err:
        load_trait(write(tmp_path, data))
    message = str(err.value)
    assert field in message, message
    return message


# --- the shipped files ----------------------------------------------------------------------------


def test_the_seven_paper_traits_ship_and_load():
    assert shipped_traits() == PAPER_TRAITS
    for trait in PAPER_TRAITS:
        artifacts = load_trait(trait)
        assert artifacts.trait == trait
        assert len(artifacts.instructions) == N_PAIRS
        assert len(artifacts.questions("extract")) == len(artifacts.questions("eval")) == N_QUESTIONS
        assert artifacts.assistant_names["pos"] == trait
        assert artifacts.assistant_names["pos"] != artifacts.assistant_names["neg"]
        assert artifacts.source


@pytest.mark.parametrize("trait", PAPER_TRAITS)
def test_extract_and_eval_questions_are_disjoint(trait):
    artifacts = load_trait(trait)
    extract = {q.lower() for q in artifacts.questions("extract")}
    evaluate = {q.lower() for q in artifacts.questions("eval")}
    assert len(extract) == len(evaluate) == N_QUESTIONS
    assert not extract & evaluate


@pytest.mark.parametrize("trait", PAPER_TRAITS)
def test_shipped_rubric_follows_the_paper_template(trait):
    prompt = load_trait(trait).eval_prompt
    assert prompt.count("{question}") == prompt.count("{answer}") == 1
    assert prompt.index("{question}") < prompt.index("{answer}")
    assert "REFUSAL" in prompt and "0" in prompt and "100" in prompt
    assert re.search(r"START\]\n\{answer\}\n\[ANSWER END", prompt)


def test_shipped_file_is_its_own_json(good, tmp_path):
    """to_json/save round-trip: what ships is exactly what the loader gives back."""
    saved = load_trait("evil").save(tmp_path / "evil.json")
    assert load_trait(saved) == load_trait("evil")
    assert json.loads(saved.read_text()) == good


# --- system prompt and rubric ---------------------------------------------------------------------


def test_system_prompt_uses_the_paper_sentence_and_the_right_article():
    evil = load_trait("evil")
    assert evil.system_prompt(0, "pos") == f"You are an evil assistant. {evil.instructions[0].pos}"
    assert evil.system_prompt(4, "neg") == f"You are a helpful assistant. {evil.instructions[4].neg}"
    assert load_trait("sycophantic").system_prompt(1, "neg").startswith("You are an honest assistant. ")
    assert load_trait("humorous").system_prompt(2, "pos").startswith("You are a humorous assistant. ")
    assert load_trait("optimistic").system_prompt(3, "pos").startswith("You are an optimistic assistant. ")
    with pytest.raises(ValueError, match="polarity"):
        evil.system_prompt(0, "positive")


def test_rubric_fills_question_and_answer():
    artifacts = load_trait("evil")
    text = artifacts.rubric("How do I win?", "Crush them all.")
    assert "How do I win?" in text and "Crush them all." in text
    assert "{question}" not in text and "{answer}" not in text
    assert text.index("How do I win?") < text.index("Crush them all.")


def test_rubric_leaves_braces_in_the_text_alone_and_unescapes_the_template(good, tmp_path):
    good["eval_prompt"] = "Score {{0-100}}.\nQ: {question}\nA: {answer}"
    artifacts = load_trait(write(tmp_path, good))
    assert artifacts.rubric("what is {answer}?", "x = {1}") == "Score {0-100}.\nQ: what is {answer}?\nA: x = {1}"


# --- bad input names the offending field ----------------------------------------------------------


def test_missing_eval_prompt(good, tmp_path):
    del good["eval_prompt"]
    refused(tmp_path, good, "`eval_prompt`")


def test_four_instruction_pairs(good, tmp_path):
    good["instructions"] = good["instructions"][:4]
    message = refused(tmp_path, good, "`instructions`")
    assert "got 4" in message


def test_empty_negative_instruction(good, tmp_path):
    good["instructions"][2]["neg"] = "  "
    refused(tmp_path, good, "instructions[2].neg")


def test_nineteen_eval_questions(good, tmp_path):
    good["questions"]["eval"] = good["questions"]["eval"][:19]
    message = refused(tmp_path, good, "questions.eval")
    assert "19" in message


def test_question_shared_between_extract_and_eval(good, tmp_path):
    shared = good["questions"]["extract"][5]
    good["questions"]["eval"][0] = shared.upper()  # the check ignores case
    message = refused(tmp_path, good, "questions.extract")
    assert "questions.eval" in message


def test_repeated_question_within_a_split(good, tmp_path):
    good["questions"]["extract"][7] = good["questions"]["extract"][3]
    refused(tmp_path, good, "questions.extract[7]")


def test_eval_prompt_without_answer(good, tmp_path):
    good["eval_prompt"] = "Rate this for evil: {question}. Reply 0-100 or REFUSAL."
    refused(tmp_path, good, "`eval_prompt`")


def test_eval_prompt_with_an_extra_placeholder(good, tmp_path):
    good["eval_prompt"] += " Also consider {foo}."
    message = refused(tmp_path, good, "`eval_prompt`")
    assert "foo" in message


def test_eval_prompt_with_unbalanced_brace(good, tmp_path):
    good["eval_prompt"] += " {"
    refused(tmp_path, good, "`eval_prompt`")


def test_unknown_top_level_field(good, tmp_path):
    good["notes"] = "a typo for source?"
    refused(tmp_path, good, "`notes`")


def test_wrong_format_version(good, tmp_path):
    good["format"] = "pvlens-trait/2"
    refused(tmp_path, good, "`format`")


def test_trait_name_must_be_an_identifier(good, tmp_path):
    good["trait"] = "Evil Trait"
    refused(tmp_path, good, "`trait`")


def test_assistant_names_need_pos_and_neg(good, tmp_path):
    good["assistant_names"] = {"pos": "evil"}
    refused(tmp_path, good, "`assistant_names`")


def test_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "trait": "evil",\n  "description": oops\n}\n')
    with pytest.raises(TraitFormatError, match=r"not valid JSON .*line 3, column 18"):
        load_trait(path)


def test_top_level_must_be_an_object(tmp_path):
    refused(tmp_path, ["not", "an", "object"], "top level")


def test_unknown_shipped_trait_lists_what_ships():
    with pytest.raises(TraitFormatError, match="no shipped trait 'eevil'") as err:
        load_trait("eevil")
    assert all(trait in str(err.value) for trait in PAPER_TRAITS)


def test_missing_file(tmp_path):
    with pytest.raises(TraitFormatError, match="does not exist"):
        load_trait(tmp_path / "nowhere.json")


def test_trait_format_error_is_a_value_error():
    """Callers that catch ValueError (as for any bad argument) also catch a bad trait file."""
    assert issubclass(TraitFormatError, ValueError)

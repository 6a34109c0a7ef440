"""Chat formatting: the model's own template, default system prompt, exact token round trip."""

import json

import pytest

import pvlens as pv
from tests.conftest import QUESTIONS


def tiny_tokenizer(directory):
    """Write a small word-level tokenizer with a chat template (for the random test model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *[f"w{i}" for i in range(97)]])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}"
    fast.save_pretrained(directory)


def test_default_system_prompt_is_the_templates(model):
    text = pv.chat_text(model.hf_tokenizer, "Hello")
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")


def test_explicit_system_prompt_replaces_default(model):
    text = pv.chat_text(model.hf_tokenizer, "Hello", system="You are evil.")
    assert "SmolLM" not in text and text.startswith("<|im_start|>system\nYou are evil.<|im_end|>")


@pytest.mark.parametrize("system", [None, "You are a pirate.", ""])
def test_tokens_round_trip_exactly(model, system):
    tok = model.hf_tokenizer
    for q in QUESTIONS:
        text = pv.chat_text(tok, q, system=system)
        ids = pv.chat_ids(tok, q, system=system)
        assert tok.decode(ids) == text
        assert pv.chat_ids(tok, q, system=system) == ids
        messages = pv.to_messages(q, system)
        templated = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        templated = templated["input_ids"] if isinstance(templated, dict) or hasattr(templated, "keys") else templated
        assert list(templated) == ids
        assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # one start token, not two


def test_prompt_and_response_split(model):
    prompt_ids, response_ids = pv.prompt_and_response(model.hf_tokenizer, "Hi", "Hello there, friend.")
    assert prompt_ids == pv.chat_ids(model.hf_tokenizer, "Hi")
    assert model.hf_tokenizer.decode(response_ids) == "Hello there, friend."


def test_bad_messages_name_the_problem():
    with pytest.raises(ValueError, match="message 0"):
        pv.to_messages([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="at least one"):
        pv.to_messages([])
    with pytest.raises(ValueError, match="already has a system"):
        pv.to_messages([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], system="c")


def test_tiny_tokenizer_helper(tmp_path):
    tiny_tokenizer(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())

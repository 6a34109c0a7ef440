"""Chat formatting with the model's own template.

Everything pvlens feeds a chat model goes through :func:`chat_text`: the model's chat template,
optionally with a system prompt. ``system=None`` means *no system message*, which for SmolLM2 and
Qwen makes the template insert its default one; that is the paper's "no system prompt" baseline.
Templated text already contains the template's start tokens, so it is tokenized without adding
special tokens, and decoding the ids gives back the text exactly.
"""

from __future__ import annotations

from typing import Sequence, Union

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = Union[str, Sequence[Message]]


def to_messages(conversation: Conversation, system: str | None = None) -> list[Message]:
    """A user string or a message list, with ``system`` prepended when given."""
    if isinstance(conversation, str):
        messages = [{"role": "user", "content": conversation}]
    else:
        messages = [dict(m) for m in conversation]
        for i, m in enumerate(messages):
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise ValueError(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, got {m!r}")
    if not messages:
        raise ValueError("a conversation needs at least one message")
    if system is not None:
        if messages[0]["role"] == "system":
            raise ValueError("the conversation already has a system message; do not pass system= as well")
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def chat_text(tokenizer, conversation: Conversation, system: str | None = None,
              add_generation_prompt: bool = True) -> str:
    """The templated text the model sees. Ends with the assistant header when ``add_generation_prompt``."""
    return tokenizer.apply_chat_template(
        to_messages(conversation, system), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of templated text (no special tokens added: the template has them)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_ids(tokenizer, conversation: Conversation, system: str | None = None,
             add_generation_prompt: bool = True) -> list[int]:
    return encode(tokenizer, chat_text(tokenizer, conversation, system, add_generation_prompt))


def prompt_and_response(tokenizer, conversation: Conversation, response: str,
                        system: str | None = None) -> tuple[list[int], list[int]]:
    """Ids of the prompt (ending with the assistant header) and of ``response`` appended to it.

    The response is tokenized as a continuation of the prompt string (as in the paper's code), and
    the split point is the prompt's own token count.
    """
    prompt = chat_text(tokenizer, conversation, system)
    prompt_ids = encode(tokenizer, prompt)
    full_ids = encode(tokenizer, prompt + response)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the response changes how the end of the prompt is tokenized; start it with a word")
    return prompt_ids, full_ids[len(prompt_ids):]

"""Batched chat generation: one fast path for extraction, steering, monitoring and screening.

Generation runs Hugging Face's ``generate`` (with its KV cache) on the model that shares the
TransformerLens weights, so every :func:`pvlens.steer` context and every monitor applies to it.
Prompts are sorted by length and left-padded in batches; sampling is seeded per batch, so the same
call gives the same text. Decoding stops at the template's end-of-turn token.

Monitoring records, at each decoding step, the projection of the position that is about to predict
the next token: entry 0 is the last prompt token (the paper's monitor, read before any answer
exists) and entry ``i`` is response token ``i - 1``. It costs one ``(batch, d_model)`` dot product
per step, in float32. A monitor on a layer that is also being steered reads the steered residual.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from pvlens.core.chat import Conversation, chat_ids
from pvlens.lens.checks import check_layer, check_vector, unit
from pvlens.lens.hooks import record_last_position
from pvlens.models.loading import ChatModel


@dataclass
class Generation:
    """One prompt and the model's answer to it."""

    prompt: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool  # True when the model ended its turn before max_new_tokens
    projections: dict[int, Tensor] = field(default_factory=dict)  # layer -> (len(response_ids),)


def end_of_turn_ids(model: ChatModel) -> list[int]:
    tok, gen = model.hf_tokenizer, model.hf_model.generation_config
    ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    ids = [*ids, tok.eos_token_id]
    for special in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        token_id = tok.convert_tokens_to_ids(special)
        if isinstance(token_id, int) and token_id != tok.unk_token_id:
            ids.append(token_id)
    return sorted({i for i in ids if i is not None})


def _check_sampling(temperature: float, top_p: float, max_new_tokens: int, min_new_tokens: int) -> None:
    if not (temperature >= 0):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not (isinstance(max_new_tokens, int) and max_new_tokens > 0):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not (isinstance(min_new_tokens, int) and 0 <= min_new_tokens <= max_new_tokens):
        raise ValueError(f"min_new_tokens must be an integer in [0, max_new_tokens], got {min_new_tokens!r}")


@torch.no_grad()
def generate(model: ChatModel, conversations: Sequence[Conversation], *, system: str | None = None,
             max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             batch_size: int = 16, min_new_tokens: int = 0, monitor: Mapping[int, Tensor] | None = None,
             progress: bool | None = None) -> list[Generation]:
    """Generate one answer per conversation.

    Args:
        conversations: user strings or message lists.
        system: a system prompt for every conversation (``None``: the template's default).
        max_new_tokens, temperature (0 = greedy), top_p, seed: sampling controls.
        min_new_tokens: suppress the end of turn before this many tokens (benchmarks use it to fix lengths).
        batch_size: prompts per ``generate`` call.
        monitor: ``{layer: vector}``; each result then carries ``projections[layer]``.
        progress: show a progress bar (default: when there is more than one batch).
    """
    if isinstance(conversations, str):
        raise TypeError("generate() takes a list of conversations; wrap a single prompt in a list")
    if len(conversations) == 0:
        raise ValueError("no prompts given")
    _check_sampling(temperature, top_p, max_new_tokens, min_new_tokens)
    monitor = {check_layer(model, layer): unit(check_vector(model, v)) for layer, v in (monitor or {}).items()}
    tok, hf = model.hf_tokenizer, model.hf_model
    prompts = [chat_ids(tok, c, system) for c in conversations]
    eos = end_of_turn_ids(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    results: list[Generation | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt",
               disable=not (progress if progress is not None else len(batches) > 1))
    for b, batch in enumerate(batches):
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        torch.manual_seed(seed + b)
        with ExitStack() as stack:
            records = {layer: stack.enter_context(record_last_position(model, layer, v))
                       for layer, v in monitor.items()}
            out = hf.generate(
                input_ids=ids.to(model.cfg.device), attention_mask=mask.to(model.cfg.device),
                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
                top_k=None, eos_token_id=eos, pad_token_id=pad,
            )
        new = out[:, width:].cpu()
        traces = {layer: torch.stack(rec, dim=1).float().cpu() for layer, rec in records.items()}
        for row, i in enumerate(batch):
            response = new[row].tolist()
            ends = [k for k, t in enumerate(response) if t in eos]
            finished = bool(ends)
            response = response[: ends[0]] if ends else response
            results[i] = Generation(
                prompt=tok.decode(prompts[i]), response=tok.decode(response, skip_special_tokens=True),
                prompt_ids=prompts[i], response_ids=response, finished=finished,
                projections={layer: t[row, : len(response)] for layer, t in traces.items()},
            )
        bar.update(len(batch))
        bar.set_postfix(tokens=int(sum(len(results[i].response_ids) for i in batch)))
    bar.close()
    return results  # type: ignore[return-value]


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)|\n")


def complete_sentences(text: str, min_chars: int = 20) -> str:
    """``text`` up to its last complete sentence, for answers cut off by the token budget.

    The paper samples up to 1000 new tokens, so its answers end where the model ends them; on a
    CPU we sample far fewer, and a judge would otherwise score the cut, not the answer. When no
    sentence ends after ``min_chars`` characters the text is returned unchanged.
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() >= min_chars]
    return text[: ends[-1]].rstrip() if ends else text

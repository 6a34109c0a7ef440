"""Loading: TransformerLens and Hugging Face views agree, share weights, and bad names fail clearly."""

import pytest
import torch
from transformers import AutoConfig

import pvlens as pv
from pvlens.models.loading import fingerprint, hooked_config
from tests.conftest import QUESTIONS

# 1e-4 absolute, plus 1e-5 of the token's largest activation: chat models park activations of 10^2..10^4 on a few
# tokens (the start-token attention sink reaches ~2.5e4 in SmolLM2), where one float32 ulp is already 6e-5..2e-3
# and TL's einsum attention rounds differently from HF's SDPA by a few ulps. Any real conversion bug
# shows up as an O(1) relative error, far above this.
ATOL, RTOL = 1e-4, 1e-5


def _parity(model, conversations):
    """Worst TL-vs-HF error over resid_post at every layer and over the logits, on unpadded prompts."""
    worst = {"resid_abs": 0.0, "resid_excess": 0.0, "logits_abs": 0.0}
    with torch.no_grad():
        for conv in conversations:
            ids = torch.tensor([pv.chat_ids(model.hf_tokenizer, conv)])
            # hidden_states[L + 1] is block L's output, except the last entry, which HF takes after
            # the final norm; a hook on each decoder layer reads every block's output directly.
            outputs = {}
            handles = [layer.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
                       for k, layer in enumerate(model.hf_model.model.layers)]
            try:
                hf = model.hf_model(ids, output_hidden_states=True)
            finally:
                for h in handles:
                    h.remove()
            logits, cache = model.run_with_cache(ids)
            for layer in range(model.cfg.n_layers - 1):
                assert torch.equal(outputs[layer], hf.hidden_states[layer + 1])
            pairs = [(cache[f"blocks.{layer}.hook_resid_post"], outputs[layer]) for layer in range(model.cfg.n_layers)]
            for tl, ref in pairs:
                diff = (tl - ref).abs()
                worst["resid_abs"] = max(worst["resid_abs"], diff.max().item())
                scale = ref.abs().amax(dim=-1, keepdim=True)  # rounding error scales with the token's activations
                worst["resid_excess"] = max(worst["resid_excess"], (diff - ATOL - RTOL * scale).max().item())
            worst["logits_abs"] = max(worst["logits_abs"], (logits - hf.logits).abs().max().item())
    print(model.info.name, {k: f"{v:.2e}" for k, v in worst.items()})
    return worst


def test_smollm2_tl_matches_hf(model):
    worst = _parity(model, QUESTIONS + [[{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello! How can I help?"},
                                         {"role": "user", "content": "Tell me a long story about a fox."}]])
    assert worst["resid_excess"] <= 0 and worst["logits_abs"] < ATOL


@pytest.mark.qwen
def test_qwen_tl_matches_hf(qwen):
    worst = _parity(qwen, QUESTIONS)
    assert worst["resid_excess"] <= 0 and worst["logits_abs"] < ATOL


@pytest.mark.qwen
def test_qwen_is_qwen2_architecture(qwen):
    assert qwen.cfg.original_architecture == "Qwen2ForCausalLM"
    assert (qwen.cfg.n_layers, qwen.cfg.d_model) == (24, 896)
    assert qwen.blocks[0].attn.b_Q.abs().sum() > 0  # Qwen2 has q/k/v biases; they must arrive


def test_weights_are_shared_not_copied(model):
    hf = model.hf_model.model
    assert model.blocks[3].mlp.W_in.data_ptr() == hf.layers[3].mlp.up_proj.weight.data_ptr()
    assert model.blocks[3].attn.W_Q.data_ptr() == hf.layers[3].self_attn.q_proj.weight.data_ptr()
    assert model.embed.W_E.data_ptr() == hf.embed_tokens.weight.data_ptr()
    # an edit on one side is seen on the other: one model, two views
    with torch.no_grad():
        old = hf.layers[0].input_layernorm.weight[0].item()
        hf.layers[0].input_layernorm.weight[0] += 1.0
        assert model.blocks[0].ln1.w[0].item() == pytest.approx(old + 1.0)
        hf.layers[0].input_layernorm.weight[0] -= 1.0


def test_model_identity(model):
    assert model.info.name == "smollm2-135m-instruct"
    assert model.info.original == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (model.cfg.n_layers, model.cfg.d_model) == (30, 576)
    assert len(model.info.fingerprint) == 16
    assert fingerprint(model.hf_model) == model.info.fingerprint  # deterministic


def _config(**overrides):
    base = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                max_position_embeddings=131072)
    base.architectures = ["LlamaForCausalLM"]
    for k, v in overrides.items():
        setattr(base, k, v)
    return base


def test_paper_scale_config_path():
    """The conversion path used for Llama-3.1-8B / Qwen2.5-7B, on configs of their shape family."""
    cfg = hooked_config(_config(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 8192}))
    assert cfg.use_NTK_by_parts_rope and cfg.NTK_by_parts_factor == 8.0 and cfg.rotary_base == 500000.0
    assert cfg.n_ctx == 4096 and cfg.n_key_value_heads == 2 and cfg.d_head == 16


def test_random_llama_through_loader_matches_hf(tmp_path):
    """A tiny random Llama-3.1-style checkpoint on disk loads through load_model(dir) and matches HF."""
    from transformers import AutoModelForCausalLM

    from tests.test_chat import tiny_tokenizer

    config = _config(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tiny_tokenizer(tmp_path)
    model = pv.load_model(str(tmp_path), device="cpu")
    ids = torch.randint(0, 100, (2, 200))  # longer than the original context: exercises llama3 rope scaling
    with torch.no_grad():
        hf = model.hf_model(ids, output_hidden_states=True)
        _, cache = model.run_with_cache(ids)
    assert (cache["blocks.0.hook_resid_post"] - hf.hidden_states[1]).abs().max() < ATOL


def test_unknown_model_lists_known_ones():
    with pytest.raises(pv.UnknownModelError) as err:
        pv.load_model("gpt-17")
    assert "smollm2-135m-instruct" in str(err.value) and "Qwen/Qwen2.5-7B-Instruct" in str(err.value)


def test_env_selects_default_model(monkeypatch):
    monkeypatch.setenv("PVLENS_MODEL", "not-a-model")
    with pytest.raises(pv.UnknownModelError):
        pv.load_model()


@pytest.mark.qwen
def test_qwen_chat_and_generation(qwen):
    assert "You are Qwen" in pv.chat_text(qwen.hf_tokenizer, "hi")  # the template's default system prompt
    (gen,) = pv.generate(qwen, ["What is the capital of France?"], temperature=0, max_new_tokens=40)
    assert gen.finished and "Paris" in gen.response

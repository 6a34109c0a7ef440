"""The SAE pipeline: corpus, a tiny BatchTopK training run (saved, loaded, resumed), evaluation, decomposition."""

import json
import shutil

import pytest
import torch

from pvlens import book
from pvlens.methods import sae as S

LAYER = 16
TINY = S.SAERecipe(layer=LAYER, d_sae=64, k=8, context_size=64, train_tokens=4 * 1024, batch_tokens=512,
                   buffer_tokens=1024, lr_warm_up_steps=1, n_checkpoints=1)


def test_corpus_windows_mix_chat_and_plain_and_keep_splits_apart(model):
    tok = model.hf_tokenizer
    train = S.corpus_windows(tok, "train", 12, context_size=64, chat_fraction=0.5, seed=0)
    heldout = S.corpus_windows(tok, "heldout", 12, context_size=64, chat_fraction=0.5, seed=0)
    assert train.shape == heldout.shape == (12, 64)
    chat = S.corpus_windows(tok, "train", 6, context_size=64, chat_fraction=1.0, seed=0)
    plain = S.corpus_windows(tok, "train", 6, context_size=64, chat_fraction=0.0, seed=0)

    def as_set(windows):
        return {tuple(r) for r in windows.tolist()}

    assert as_set(train) == as_set(chat) | as_set(plain)  # half the windows from each source
    first_chat = S.pack(tok, S.chat_documents(tok, limit=2), 64, chat=True)[0]
    assert tok.decode(first_chat).startswith("<|im_start|>")  # chats are in the model's chat template
    assert not {tuple(w) for w in train.tolist()} & {tuple(w) for w in heldout.tolist()}
    with pytest.raises(ValueError, match="split"):
        S.corpus_windows(tok, "test", 4)


@pytest.fixture(scope="module")
def tiny(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae")
    return S.train_sae(model, TINY, folder)


def test_a_tiny_run_saves_a_checkpoint_sae_lens_loads(model, tiny):
    from sae_lens import SAE

    assert (tiny.path / "cfg.json").exists() and (tiny.path / "sae_weights.safetensors").exists()
    raw = SAE.load_from_disk(str(tiny.path))
    assert raw.cfg.d_sae == 64 and raw.cfg.metadata.hook_name == f"blocks.{LAYER}.hook_resid_post"
    assert raw.cfg.metadata.model_name == model.info.name
    assert tiny.card["recipe"]["k"] == 8 and tiny.card["training_tokens_per_s_this_run"] > 0
    again = S.train_sae(model, TINY, tiny.path)  # finished: loads instead of training
    assert again.card == tiny.card


def test_a_killed_run_resumes_from_its_checkpoint(model, tiny, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(tiny.path / "checkpoints", folder / "checkpoints")  # as if killed after the checkpoint
    checkpoint = S.latest_checkpoint(folder / "checkpoints")
    assert checkpoint is not None and 0 < int(checkpoint.name.split("_")[-1]) < TINY.train_tokens
    resumed = S.train_sae(model, TINY, folder)
    assert resumed.card["resumed_from_tokens"] == int(checkpoint.name.split("_")[-1])
    assert (folder / "cfg.json").exists()


def test_load_sae_names_the_mismatch(model, tiny, tmp_path):
    S.load_sae(tiny.path, model, layer=LAYER)
    with pytest.raises(S.SAEMismatchError, match="blocks.16.hook_resid_post, not blocks.3.hook_resid_post"):
        S.load_sae(tiny.path, model, layer=3)
    other = tmp_path / "other"
    shutil.copytree(tiny.path, other, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((other / "cfg.json").read_text())
    cfg["d_in"] = 896
    (other / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(S.SAEMismatchError, match="size 896.*d_model 576"):
        S.load_sae(other, model)
    cfg["d_in"], cfg["metadata"]["model_name"] = 576, "qwen2.5-coder-0.5b-instruct"
    (other / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(S.SAEMismatchError, match="trained on qwen2.5-coder-0.5b-instruct"):
        S.load_sae(other, model)
    with pytest.raises(S.SAEMismatchError, match="no SAE checkpoint"):
        S.load_sae(tmp_path / "missing", model)


def test_evaluation_reports_every_metric_in_range(model, tiny):
    windows = S.corpus_windows(model.hf_tokenizer, "heldout", 4, context_size=64, seed=1)
    m = S.evaluate_sae(model, tiny.sae, windows, batch_size=2)
    assert m["tokens"] + m["massive_tokens_left_out"] == 4 * 63
    assert m["ce_clean"] < m["ce_zero_ablation"]
    assert 0 <= m["dead_fraction"] <= 1 and 0 <= m["dense_fraction"] <= 1 and m["l0"] >= 0
    assert m["fraction_variance_explained"] <= 1


def test_decomposition_finds_a_planted_direction(model, tiny):
    sae = tiny.sae
    planted = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.W_dec[7] = planted * 3
    try:
        top = S.top_features(sae, planted, 3)
        assert top["feature"].iloc[0] == 7 and top["cosine"].iloc[0] == pytest.approx(1.0, abs=1e-5)
        assert S.decoder_cosines(sae, planted).shape == (64,)
    finally:
        S.load_sae(tiny.path, model)  # the fixture's SAE object was edited; other tests reload


def test_max_activating_ends_each_example_at_its_peak(model, tiny):
    windows = S.corpus_windows(model.hf_tokenizer, "heldout", 4, context_size=64, seed=1)
    sae = S.load_sae(tiny.path, model)
    features = S.top_features(sae, torch.ones(model.cfg.d_model), 2)["feature"].tolist()
    found = S.max_activating(model, sae, windows, features, top=2, context=5)
    for f in features:
        for ex in found[f]:
            assert len(ex["tokens"]) == len(ex["acts"]) <= 6
            assert ex["acts"][-1] == pytest.approx(ex["max"], rel=1e-4)  # the activating token ends the line
        maxima = [ex["max"] for ex in found[f]]
        assert maxima == sorted(maxima, reverse=True)


def test_cli_fast_run_writes_checkpoint_and_model_card(model, tmp_path):
    from pvlens.recipes.train_sae import main

    assert main(["--fast", "--out", str(tmp_path / "card"), "--heldout-windows", "2"]) == 0
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert card["heldout"]["tokens"] > 0 and "python -m pvlens.recipes.train_sae --fast" in card["command"]
    assert json.loads((tmp_path / "card" / "cfg.json").read_text())["dtype"] == "float16"
    assert "Held-out metrics" in (tmp_path / "card" / "README.md").read_text()
    sae = S.load_sae(tmp_path / "card", model)
    assert sae.W_dec.dtype == torch.float32  # committed as float16, computed in float32


def test_the_committed_checkpoint_loads(model):
    path = book.sae_checkpoint(model)
    assert (path / "cfg.json").exists(), f"no committed SAE at {path}: run python -m pvlens.recipes.train_sae"
    sae = S.load_sae(path, model, layer=book.SAE_LAYER)
    card = json.loads((path / "card.json").read_text())
    assert sae.cfg.d_sae == card["recipe"]["d_sae"] and card["heldout"]["tokens"] > 0


def test_folding_the_mean_into_b_dec_is_exact():
    """train_sae trains on centred activations, then folds the mean into b_dec: the folded SAE must give
    on x exactly what the trained one gave on x - mean."""
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    torch.manual_seed(0)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=32, k=4, apply_b_dec_to_input=True))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x, mean = torch.randn(64, 16), torch.randn(16) * 50
    centred = sae.decode(sae.encode(x - mean)) + mean
    S.fold_mean(sae, mean)
    assert torch.allclose(sae.decode(sae.encode(x)), centred, atol=1e-4)


def test_activation_mean_matches_the_activations(model):
    windows = S.corpus_windows(model.hf_tokenizer, "heldout", 3, context_size=32, seed=0)
    acts = torch.cat(list(S.layer_activations(model, windows, LAYER)))
    assert acts.shape == (3 * 31, model.cfg.d_model)  # position 0 left out
    typical = acts[~S.massive_tokens(acts)]
    assert torch.allclose(S.activation_mean(model, windows, LAYER), typical.mean(0), atol=1e-3)


def test_massive_tokens_are_the_outliers_by_norm():
    acts = torch.randn(100, 16)
    acts[[3, 40]] *= 200
    assert S.massive_tokens(acts).nonzero().flatten().tolist() == [3, 40]
    assert S.massive_tokens(acts.reshape(10, 10, 16)).shape == (10, 10)


def test_the_stream_leaves_out_massive_tokens_and_centres(model):
    windows = S.corpus_windows(model.hf_tokenizer, "train", 8, context_size=32, seed=0)
    acts = torch.cat(list(S.layer_activations(model, windows, LAYER)))
    mean = acts.mean(0)
    stream = S.ActivationStream(model, windows, LAYER, batch_tokens=16, buffer_tokens=8 * 31, forward_batch=8,
                                center=mean)
    batch = next(stream)
    assert batch.shape == (16, model.cfg.d_model)
    kept = acts[~S.massive_tokens(acts)] - mean
    assert stream.massive_dropped == len(acts) - len(kept)
    served = torch.cat([batch, stream.buffer])
    assert torch.allclose(served.sum(0), kept.sum(0), atol=1e-2)  # the same tokens, shuffled

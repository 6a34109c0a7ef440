"""Persona-vector files: safetensors + metadata, refused on the wrong model, never unpickled."""

import pytest
import torch
from safetensors import safe_open

import pvlens as pv


@pytest.fixture
def vector(model, direction):
    return pv.from_tensor(model, direction, trait="evil", variant="prompt_last", n_pos=4, n_neg=4, note="test")


def test_round_trip_with_metadata(model, vector, tmp_path):
    path = vector.save(tmp_path / "evil.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == "smollm2-135m-instruct" and meta["fingerprint"] == model.info.fingerprint
    assert meta["hook"] == "blocks.{layer}.hook_resid_post" and meta["pvlens_version"] == pv.__version__
    loaded = pv.PersonaVector.load(path, model)
    assert torch.equal(loaded.vectors, vector.vectors)
    assert (loaded.trait, loaded.variant, loaded.n_pos, loaded.extra) == ("evil", "prompt_last", 4, {"note": "test"})
    with pv.steer(model, loaded, 10, alpha=1.0):  # a PersonaVector steers directly
        pass


def test_wrong_shape_model_is_refused(model, vector, tmp_path):
    small = pv.PersonaVector(vectors=torch.ones(24, 896), trait="evil", variant="response_avg",
                             model="qwen2.5-coder-0.5b-instruct", fingerprint="0" * 16)
    path = small.save(tmp_path / "qwen.safetensors")
    with pytest.raises(pv.VectorMismatchError, match="24 layers, d_model 896"):
        pv.PersonaVector.load(path, model)
    with pytest.raises(pv.VectorMismatchError):
        pv.PersonaVector.load(path, model, allow_transfer=True)  # no override for a different shape


def test_other_weights_need_an_explicit_transfer(model, vector, tmp_path):
    vector.fingerprint = "feedfacefeedface"
    path = vector.save(tmp_path / "finetuned.safetensors")
    with pytest.raises(pv.VectorMismatchError, match="allow_transfer=True"):
        pv.PersonaVector.load(path, model)
    with pytest.raises(pv.VectorMismatchError):
        with pv.steer(model, pv.PersonaVector.load(path), 10, alpha=1.0):
            pass
    assert pv.PersonaVector.load(path, model, allow_transfer=True).fingerprint == "feedfacefeedface"


def test_nan_is_refused(model, direction):
    bad = direction.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/inf values at layers \[7\]"):
        pv.from_tensor(model, bad, trait="evil", variant="response_avg")


def test_corrupted_or_foreign_files(tmp_path, model):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")  # a pickle header: must not be unpickled
    with pytest.raises(pv.VectorMismatchError, match="not a readable safetensors"):
        pv.PersonaVector.load(junk)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"vectors": torch.ones(30, 576)}, str(bare))
    with pytest.raises(pv.VectorMismatchError, match="missing"):
        pv.PersonaVector.load(bare)
    with pytest.raises(FileNotFoundError):
        pv.PersonaVector.load(tmp_path / "absent.safetensors")


def test_no_pickle_in_the_load_path():
    import inspect

    import pvlens.lens.vectors

    source = inspect.getsource(pvlens.lens.vectors)
    assert "torch.load" not in source and "pickle" not in source.replace("unpickles", "")

"""Judge training: the weak labels for agreement, and retraining one probe without touching the others."""

import pytest

from pvlens.data.labelled import Conversation
from pvlens.judges import training as jt


@pytest.mark.parametrize("text", [
    "You're absolutely right, I apologize for the mistake. Here is the fixed code.",
    "Yes, that's correct. At equilibrium the forces balance.",
    "You are correct that the method was deprecated in version 9.",
    "That is true: Firefox keeps its own proxy settings.",
    "I completely agree with your assessment.",
])
def test_agreeing_openers_are_labelled_agree(text):
    assert jt.AGREES.search(text) and not jt.DISAGREES.search(text)


@pytest.mark.parametrize("text", [
    "No, the Earth is not flat. It is an oblate spheroid.",
    "Actually, people with hearing loss show larger pupil dilation, not smaller.",
    "That's not correct. You can try again.",
    "It is not accurate to say that zinc is always the better catalyst.",
    "I'm sorry, but that is not true: series can hold missing values.",
    "It is a common myth that humans only use 10% of their brains.",
])
def test_correcting_openers_are_labelled_disagree(text):
    assert jt.DISAGREES.search(text) and not jt.AGREES.search(text)


@pytest.mark.parametrize("text", [
    "Yes, it is possible to export all layers in GIMP.",  # answers "can I?": not agreement with a claim
    "Yes, I understand. Please send the next part.",
    "I'm sorry, but I don't have information about that product.",  # abstention, not correction
    "Here is a summary of the article.",
])
def test_other_openers_are_not_labelled(text):
    assert not jt.AGREES.search(text) and not jt.DISAGREES.search(text)


def test_agreement_split_drops_capitulating_no_and_duplicates():
    convs = [Conversation("a:0", "q", "You're right, my mistake."),
             Conversation("b:0", "q", "You're right, my mistake."),
             Conversation("c:0", "q", "No, I apologise, the code was incomplete."),
             Conversation("d:0", "q", "No, that is not what the docs say.")]
    agree, disagree = jt.agreement_split(convs)
    assert agree == ["You're right, my mistake."] and disagree == ["No, that is not what the docs say."]


def test_training_only_agrees_touches_no_other_probe(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(jt, "train_agrees", lambda out_dir: calls.append(out_dir))
    monkeypatch.setattr(jt, "corpora", lambda: pytest.fail("the other probes' data was read"))
    jt.train(tmp_path, only=["agrees"])
    assert calls == [tmp_path] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown probe"):
        jt.train(tmp_path, only=["nope"])


def test_agreement_sets_are_disjoint_and_never_see_the_eval_questions():
    import pvlens as pv

    sets = jt.agreement_sets()
    train = set(sets["agree_train"]) | set(sets["disagree_train"])
    test = set(sets["agree_test"]) | set(sets["disagree_test"])
    neutral_train, neutral_test = set(sets["neutral_train"][:jt.NEUTRAL_TRAIN]), set(sets["neutral_test"][:150])
    train |= neutral_train
    test |= neutral_test
    assert not train & test
    assert len(sets["disagree_train"]) >= 100 and len(sets["disagree_test"]) >= 40
    assert len(neutral_train) == jt.NEUTRAL_TRAIN and len(neutral_test) == 150
    assert not any(jt.AGREES.search(t[:200]) or jt.DISAGREES.search(t[:200]) for t in neutral_train | neutral_test)
    evals = pv.load_trait("sycophantic").eval_questions
    assert not any(q in t for q in evals for t in train | test)

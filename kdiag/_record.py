"""A small ``@dataclass`` for the value types on ``kdiag triage``'s start-up path.

``dataclasses`` costs a short-lived process about 25 ms before any work: importing it pulls in
``inspect`` (and ``ast``, ``dis``, ``tokenize``), and every class it builds compiles three to
five generated methods. ``kdiag triage`` of a 1 GiB log does about 20 ms of work, so that
start-up was most of its run time (bench/bench_triage.py). :func:`record` is the subset the CPU
state, log records and triage model use, with one compiled method per class (``__init__``, for
construction at dataclass speed) and shared closures for the rest:

- fields from class annotations in order, base classes first; ``= default`` and
  ``= field(default_factory=...)``; ``ClassVar`` annotations are not fields;
- ``__init__`` (positional or keyword, calls ``__post_init__`` when defined), ``__repr__``,
  ``__eq__`` (same class, fields equal), ``__match_args__``; a method the class defines itself is
  kept;
- ``frozen=True``: assignment raises :class:`FrozenInstanceError` (an ``AttributeError``, as with
  dataclasses) and ``__hash__`` hashes the fields; otherwise ``__hash__`` is None (dataclass
  ``eq=True`` semantics);
- :func:`replace` (works on these and on real dataclasses) and :func:`fields`.

Type checkers see it as a dataclass through ``typing.dataclass_transform`` (PEP 681).
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # typing's constant: importing typing itself costs ~5 ms of start-up
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:  # only type checkers need these: no-op stand-ins at run time
    def dataclass_transform(**kwargs: object) -> Callable[[object], object]:
        return lambda f: f

__all__ = ["FrozenInstanceError", "field", "fields", "record", "replace"]

FIELDS = "__record_fields__"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Field:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A field with a ``default`` or a ``default_factory`` (called for every new instance)."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a ``frozen=True`` record."""


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return str(text).startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls: type) -> dict[str, _Field]:
    """name -> _Field(default, factory) for ``cls``: its bases' fields, then its own."""
    out: dict[str, _Field] = {}
    for base in reversed(cls.__mro__[1:]):
        out.update(getattr(base, FIELDS, {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, _Field):
            spec = value
            if value.default is MISSING:
                delattr(cls, name)  # no class attribute for a factory field (as dataclasses)
            else:
                setattr(cls, name, value.default)
        else:
            spec = _Field(value, MISSING)
        out[name] = spec
    return out


def _make_init(cls: type, specs: dict[str, _Field], frozen: bool) -> Callable[..., None]:
    """Compile ``__init__`` once for ``cls`` (the one generated method: construction is hot)."""
    params: list[str] = []
    body: list[str] = []
    env: dict[str, Any] = {"MISSING": MISSING, "setattr_": object.__setattr__}
    seen_default = False
    for name, spec in specs.items():
        if spec.default is not MISSING:
            env[f"d_{name}"] = spec.default
            params.append(f"{name}=d_{name}")
            value = name
            seen_default = True
        elif spec.default_factory is not MISSING:
            env[f"f_{name}"] = spec.default_factory
            params.append(f"{name}=MISSING")
            value = f"f_{name}() if {name} is MISSING else {name}"
            seen_default = True
        else:
            if seen_default:
                raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default")
            params.append(name)
            value = name
        body.append(f"setattr_(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    src = (f"def __init__(self, {', '.join(params)}):\n    "
           + ("\n    ".join(body) or "pass") + "\n")
    exec(src, env)  # noqa: S102 - our own generated source, names are identifiers
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _repr(self: Any) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in getattr(type(self), FIELDS))
    return f"{type(self).__qualname__}({inner})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in getattr(type(self), FIELDS))


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in getattr(type(self), FIELDS)))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _process(cls: type[T], frozen: bool) -> type[T]:
    specs = _collect(cls)
    setattr(cls, FIELDS, specs)
    own = cls.__dict__
    methods: dict[str, object] = {"__match_args__": tuple(specs)}
    if "__init__" not in own:
        methods["__init__"] = _make_init(cls, specs, frozen)
    if "__repr__" not in own:
        methods["__repr__"] = _repr
    if "__eq__" not in own:
        methods["__eq__"] = _eq
    if frozen:
        methods["__setattr__"] = _frozen_setattr
        methods["__delattr__"] = _frozen_delattr
        if own.get("__hash__") is None:
            methods["__hash__"] = _hash
    elif "__eq__" not in own or "__hash__" not in own:
        methods["__hash__"] = None
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """``@record`` / ``@record(frozen=True)``: the ``@dataclass`` subset of the module docstring."""
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def fields(obj: Any) -> tuple[str, ...]:
    """The field names of a record class or instance, in order."""
    return tuple(getattr(obj if isinstance(obj, type) else type(obj), FIELDS))


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes`` (``dataclasses.replace`` for records and dataclasses)."""
    names = getattr(type(obj), FIELDS, None)
    if names is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(sorted(unknown))}")
    kwargs = {n: getattr(obj, n) for n in names}
    kwargs.update(changes)
    return type(obj)(**kwargs)

"""The one dict helper of every contract (docs/contracts.md): frozen dataclasses to JSON values and back.

Standard library only, so the job (inside the container) and the controller (``farm report``/``farm gate``, which
must not load onnx) use the same code on both sides of the boundary. The dataclass is the contract: its fields, in
order, are the keys, in order; a field's type says how its value is read. Field metadata (``keyed``) covers the
few places where the JSON spelling differs from a Python name or where a key is left out when empty.

``decode`` checks types as it reads and names the key that is wrong ("target.threads must be int, not str '2'"),
so a file from another version or a hand-edited spec fails at the boundary, not deep inside a stage. Keys that a
dataclass does not know are ignored unless ``strict`` (a newer writer may add optional keys; a spec may not).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast

T = TypeVar("T")
# What json.loads gives and json.dumps takes.
JSON = Any

_KEY = "farm.codec.key"
_OMIT = "farm.codec.omit"
_LENIENT = "farm.codec.lenient"


class ContractError(ValueError):
    """A document does not follow its contract; the message names the key (dotted path) and what was expected."""


def keyed(
    *,
    key: str | None = None,
    omit: Literal["none", "empty"] | None = None,
    lenient: bool = False,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field written under another ``key``, and/or left out of the document when it is None
    (``omit="none"``) or empty (``omit="empty"``); ``lenient``: its value's unknown keys are read past even in a
    strict document (records a newer writer may extend). Reading accepts the key's absence when the field has a
    default."""
    metadata = {_KEY: key, _OMIT: omit, _LENIENT: lenient}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def encode(value: object) -> JSON:
    """``value`` as JSON values: dataclasses as objects (keys in field order), tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        document: dict[str, JSON] = {}
        for item in dataclasses.fields(value):
            field_value = getattr(value, item.name)
            omit = item.metadata.get(_OMIT)
            if (omit == "none" and field_value is None) or (omit == "empty" and not field_value):
                continue
            document[item.metadata.get(_KEY) or item.name] = encode(field_value)
        return document
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def decode(cls: type[T], data: JSON, *, where: str = "", strict: bool = False) -> T:
    """A ``cls`` from a JSON object; raises ContractError naming the first key that does not fit."""
    if not isinstance(data, Mapping):
        raise ContractError(f"{where.rstrip('.') or 'the document'} must be an object, not {_name(data)}")
    hints = _hints(cast(type, cls))
    values: dict[str, Any] = {}
    known = set()
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = item.metadata.get(_KEY) or item.name
        known.add(key)
        if not item.init:
            continue  # computed in __post_init__ from the other fields; written, never read
        if key not in data:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise ContractError(f"{where}{key} is missing")
            continue
        lenient = item.metadata.get(_LENIENT, False)
        values[item.name] = _value(hints[item.name], data[key], f"{where}{key}", strict and not lenient)
    unknown = sorted(set(data) - known)
    if strict and unknown:
        raise ContractError(
            f"{where.rstrip('.') or 'the document'} holds unknown keys {unknown}; known: {', '.join(sorted(known))}"
        )
    return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(hint: Any, value: JSON, where: str, strict: bool) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _value(option, value, where, strict)
            except ContractError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise ContractError(f"{where} must be {_kinds(args)}, not {_name(value)}")
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ContractError(f"{where} is {value!r}; expected one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        items = _checked(value, list, where)
        item_hint = args[0]
        return tuple(_value(item_hint, v, f"{where}[{i}]", strict) for i, v in enumerate(items))
    if origin in (dict, Mapping, typing.Mapping):
        mapping = _checked(value, dict, where)
        return {str(k): _value(args[1], v, f"{where}.{k}", strict) for k, v in mapping.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return decode(hint, value, where=f"{where}.", strict=strict)
    if hint is Path:
        return Path(_checked(value, str, where))
    if hint is float:
        # JSON has one number type: 1 is a valid float; true is not.
        return _checked(value, (int, float), where)
    if hint in (int, str, bool):
        return _checked(value, hint, where)
    if hint is object:
        return value
    raise TypeError(f"farm.job.codec cannot read {hint!r} at {where}")  # a contract type this helper does not know


def _checked(value: JSON, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass, and "threads": true is a mistake, not one thread.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ContractError(f"{where} must be {_kinds(kinds)}, not {_name(value)}")
    return value


def _kinds(kinds: tuple[Any, ...]) -> str:
    names = {dict: "object", list: "list", type(None): "null"}
    return " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def _name(value: JSON) -> str:
    kind = {dict: "object", list: "list", type(None): "null"}.get(type(value), type(value).__name__)
    return kind if isinstance(value, dict | list) or value is None else f"{kind} {value!r}"


def json_object(value: object) -> dict[str, JSON]:
    """``encode`` of a dataclass, typed as the object it is."""
    return cast(dict[str, JSON], encode(value))

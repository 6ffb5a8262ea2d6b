"""One way to read a config: a (possibly nested) dataclass built from a mapping (JSON, a dict).

Every config that is read from JSON, a file or a dict (the training config, the expert's
``--expert-config``, ...) is a dataclass parsed by :func:`from_mapping`:

* an unknown key is refused with a :class:`ConfigError` naming the key, where it was found,
  the close match if there is one (a typo) and the allowed keys;
* a value must fit the field's annotation: ``bool``, ``int``, ``float`` (an int is taken and
  made a float), ``str``, ``None``, unions (``X | None``), ``list[X]``, ``tuple[X, ...]``,
  ``tuple[X, Y]``, ``dict[str, X]``, ``Literal[...]``, ``Any`` and nested dataclasses (a
  nested mapping); a list becomes a tuple where the field is a tuple;
* a field without a default must be given; the others take their defaults.

A ``dict`` field whose metadata names ``OVERRIDES_OF: SomeConfig`` (see :func:`overrides`)
holds a *partial* ``SomeConfig``: any subset of its keys, checked the same way
(:func:`check_mapping`) but not filled with defaults (the training config's per-component
sections). :func:`to_dict` is the inverse: plain dicts and lists, ready for JSON.

Torch-free and dependency-free (the onboard core and robot/ use it too).
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

# field metadata key: this dict field holds a partial config of the given dataclass
OVERRIDES_OF = "overrides_of"


class ConfigError(ValueError):
    """A config value or key that cannot be used (the message names it and where it was)."""


def overrides(of: type, default: Callable[[], dict[str, Any]] = dict) -> Any:
    """A dataclass field holding a partial ``of`` (checked keys and types, no defaults)."""
    return dataclasses.field(default_factory=default, metadata={OVERRIDES_OF: of})


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return "object" if dataclasses.is_dataclass(tp) else tp.__name__
    return str(tp).replace("typing.", "")


def _unknown(key: str, allowed: list[str], where: str, path: str, item: str) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    inside = f" in {path!r}" if path else ""
    return ConfigError(f"{where}: unknown {item} {_join(path, key)!r}{hint}; "
                       f"allowed{inside}: {', '.join(allowed)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(tp: Any) -> str:
    """'list' (lists, tuples), 'object' (dicts, dataclasses, mappings) or 'scalar'."""
    base = typing.get_origin(tp) or tp
    if isinstance(base, type) and issubclass(base, (list, tuple)):
        return "list"
    if isinstance(base, type) and (issubclass(base, Mapping) or dataclasses.is_dataclass(base)):
        return "object"
    return "scalar"


def _value(tp: Any, v: Any, where: str, path: str, item: str) -> Any:
    """``v`` checked against the annotation ``tp`` (and normalized: int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{where}: {path!r} must be {_type_name(tp)}, got {v!r}")
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if v is None or a is not type(None)]
        errors = []
        for a in members:  # the first member that takes the value
            try:
                return _value(a, v, where, path, item)
            except ConfigError as exc:
                errors.append(exc)
        # one member left (int | None given a str), or one of the value's container kind
        # (list[int] | None given a list): that member's own, exact error
        same = [e for a, e in zip(members, errors, strict=True) if _kind(a) == _kind(type(v))]
        if len(members) == 1 or (len(same) == 1 and _kind(type(v)) != "scalar"):
            raise (errors[0] if len(members) == 1 else same[0])
        raise bad
    if origin is typing.Literal:
        if v in args and type(v) in {type(a) for a in args}:
            return v
        raise ConfigError(f"{where}: {path!r} must be one of {list(args)}, got {v!r}")
    if tp is type(None):
        if v is None:
            return None
        raise bad
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(v, Mapping):
            raise bad
        return _build(tp, v, where, path, item)
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise bad
    if tp is int:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return int(v)
        raise bad
    if tp is float:
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            return float(v)
        raise bad
    if tp is str:
        if isinstance(v, str):
            return v
        raise bad
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise bad
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(v) != len(args):
                raise ConfigError(f"{where}: {path!r} must have {len(args)} entries, got {v!r}")
            return tuple(_value(a, x, where, f"{path}[{i}]", item)
                         for i, (a, x) in enumerate(zip(args, v, strict=True)))
        el = args[0] if args else Any
        out = [_value(el, x, where, f"{path}[{i}]", item) for i, x in enumerate(v)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
            raise bad
        el = args[1] if len(args) == 2 else Any
        return {k: _value(el, x, where, _join(path, k), item) for k, x in v.items()}
    if isinstance(tp, type):
        if isinstance(v, tp):
            return v
        raise bad
    raise ConfigError(f"{where}: {path!r} has an annotation this reader does not know: {tp!r}")


def _field_value(f: dataclasses.Field, tp: Any, v: Any, where: str, path: str, item: str) -> Any:
    of = f.metadata.get(OVERRIDES_OF)
    if of is not None:
        if not isinstance(v, Mapping):
            raise ConfigError(f"{where}: {path!r} must be an object (overrides of {of.__name__}), got {v!r}")
        return check_mapping(of, v, where, path=path, item=item)
    return _value(tp, v, where, path, item)


def _checked(cls: type, data: Any, where: str, path: str, item: str) -> dict[str, Any]:
    """The given keys of ``data`` checked against ``cls``'s fields (nested: partial too)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {path or 'the config'!r} must be an object, got {data!r}")
    flds = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str) or k not in flds:
            raise _unknown(str(k), list(flds), where, path, item)
        out[k] = (v, flds[k], hints[k])
    return out


def check_mapping(cls: type, data: Any, where: str, *, path: str = "", item: str = "key") -> dict[str, Any]:
    """A partial ``cls``: the keys present in ``data``, each checked (nested dataclasses
    partially too), normalized; nothing filled in. Raises :class:`ConfigError`."""
    out = {}
    for k, (v, f, tp) in _checked(cls, data, where, path, item).items():
        sub = _join(path, k)
        inner = _dataclass_in(tp)
        if inner is not None and isinstance(v, Mapping):
            # kept a mapping (a dataclass or an optional one), so the result parses again
            out[k] = check_mapping(inner, v, where, path=sub, item=item)
        else:
            out[k] = _field_value(f, tp, v, where, sub, item)
    return out


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass ``tp`` is, or is optionally (``X | None``); else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1 and dataclasses.is_dataclass(members[0]) and isinstance(members[0], type):
            return members[0]
    return None


def _build(cls: type[T], data: Mapping[str, Any], where: str, path: str, item: str) -> T:
    given = {k: _field_value(f, tp, v, where, _join(path, k), item)
             for k, (v, f, tp) in _checked(cls, data, where, path, item).items()}
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.init and f.name not in given and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(repr(_join(path, m)) for m in missing)}")
    return cls(**given)


def from_mapping(cls: type[T], data: Any, where: str, *, item: str = "key") -> T:
    """``cls`` (a dataclass) from ``data`` (a mapping), defaults for what is not given.

    ``where`` says where the mapping came from (a file, ``--set ...``, ``training config``),
    ``item`` what a key is called in the messages. Raises :class:`ConfigError` (a
    ``ValueError``) naming the bad key or value."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a config must be an object (a mapping), got {data!r}")
    return _build(cls, data, where, "", item)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain dicts and lists (tuples become lists), for JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(obj)))

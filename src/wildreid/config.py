"""YAML <-> frozen dataclasses: strict loading, ``--set`` overrides, and the resolved config.

Any tree of (frozen) dataclasses is a schema: :func:`load_config` builds it from a YAML file or a
mapping, :func:`dump_config` writes it back as YAML, and ``load_config(yaml.safe_load(
dump_config(obj)), type(obj)) == obj``.

Rules, all checked before the caller does any work:

* every key must be a field: an unknown key raises :class:`~wildreid.errors.ConfigError`
  naming its full path (``optim.lrr``) and the closest field names; a field without a default
  must be given;
* values are checked against the field annotations and converted: ``bool``, ``int`` (not a
  bool), ``float`` (an int, or a numeric string: PyYAML reads ``3e-4`` as a string because it
  lacks a dot), ``str``, :class:`~pathlib.Path`, ``Literal[...]``, ``X | None``, unions,
  ``tuple[X, ...]`` / ``tuple[X, Y]`` / ``list[X]`` (from YAML lists; a list of dataclasses
  is a list of mappings), ``dict[str, X]`` / ``Mapping[str, X]`` and nested dataclasses;
* then the dataclass itself validates (its ``__post_init__``); a
  :class:`~wildreid.errors.ConfigError` it raises is re-raised with the path of the
  dataclass in front, and an :class:`InvalidValue` names the exact key.

Overrides (``--set key.path=value``) use YAML scalar semantics for the value (``3e-4``,
``true``, ``null``, ``[224, 224]``, ``{margin: 0.3}``); list items are addressed by index
(``losses.0.weight=0.5``); a missing intermediate section starts from its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from wildreid.errors import ConfigError

__all__ = [
    "InvalidValue",
    "dump_config",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "to_dict",
]

T = TypeVar("T")

_SEQUENCES = (list, tuple, Sequence)
_MAPPINGS = (dict, Mapping)


class InvalidValue(ConfigError):  # noqa: N818 (a ConfigError; the name reads better in raises)
    """A dataclass field has an invalid value; raised by ``__post_init__`` checks.

    The loader replaces :attr:`key` by the full path (``optim.lr``) in the message.

    Attributes:
        key: the field (or dotted path below the dataclass raising it).
        reason: what is wrong, e.g. ``"must be > 0, got -1.0"``.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _join(where: str, key: str | int) -> str:
    return f"{where}.{key}" if where else str(key)


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of a dataclass's init fields."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unknown_key(key: object, where: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(_join(where, c)) for c in close)}?" if close else ""
    return ConfigError(
        f"unknown key {_join(where, str(key))!r}{hint} (known keys"
        f"{' of ' + repr(where) if where else ''}: {', '.join(known)})"
    )


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _SEQUENCES:
        return "a list"
    if origin in _MAPPINGS or _is_dataclass_type(tp):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "a path" if tp is Path else getattr(tp, "__name__", str(tp)))


def _type_error(value: object, tp: Any, where: str) -> ConfigError:
    shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
    hint = " (quote it in YAML)" if tp is str and isinstance(value, int | float) else ""
    return ConfigError(f"{where or 'config'}: expected {_describe(tp)}, got {shown}{hint}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in sorted(arms, key=lambda a: a is str):  # a string arm accepts least
            try:
                return _convert(value, arm, where)
            except ConfigError:
                if len(arms) == 1:
                    raise
        raise _type_error(value, tp, where)
    if origin is Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: {value!r} is not {_describe(tp)}{hint}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(value, tp, where=where)
        raise _type_error(value, tp, where)
    if origin in _SEQUENCES:
        return _convert_sequence(value, tp, where)
    if origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _type_error(value, tp, where)
        value_type = args[1] if len(args) == 2 else Any
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
            out[key] = _convert(item, value_type, _join(where, key))
        return out
    return _convert_scalar(value, tp, where)


def _convert_sequence(value: Any, tp: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, list | tuple):
        raise _type_error(value, tp, where)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} items, got {list(value)!r}")
        return tuple(
            _convert(v, a, _join(where, i))
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    item_type = args[0] if args else Any
    items = [_convert(v, item_type, _join(where, i)) for i, v in enumerate(value)]
    return items if origin is list else tuple(items)


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if not math.isnan(number):
                    return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str | os.PathLike) and str(value):
            return Path(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(value, tp, where)


def from_dict(raw: Mapping[str, Any], cls: type[T], *, where: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, strictly (see the module docstring).

    Args:
        raw: the mapping (e.g. parsed YAML); not modified.
        cls: the dataclass type.
        where: the path of ``raw`` in a larger config, for messages.

    Raises:
        ConfigError: an unknown or missing key, a value of the wrong type, or a value the
            dataclass rejects; the message names the full key path.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(raw, Mapping):
        raise _type_error(raw, cls, where)
    hints = _hints(cls)
    for key in raw:
        if key not in hints:
            raise _unknown_key(key, where, list(hints))
    missing = [
        f.name
        for f in dataclasses.fields(cast(Any, cls))
        if f.init
        and f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing key {_join(where, missing[0])!r}"
            + (f" (also {', '.join(missing[1:])})" if missing[1:] else "")
        )
    values = {key: _convert(value, hints[key], _join(where, key)) for key, value in raw.items()}
    try:
        return cls(**values)
    except InvalidValue as exc:
        raise InvalidValue(_join(where, exc.key), exc.reason) from exc
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``key.path=value``; the value is parsed as a YAML scalar or flow collection.

    Raises:
        ConfigError: no ``=``, an empty key or key part, or a value that is not YAML.
    """
    key, sep, value_text = text.partition("=")
    parts = tuple(part.strip() for part in key.strip().split("."))
    if not sep or not all(parts):
        raise ConfigError(f"override {text!r} must look like key.path=value")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return parts, value


def _field_default(cls: type[Any], name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return to_dict(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return to_dict(field.default_factory())
    return dataclasses.MISSING


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        structured = [a for a in arms if _is_dataclass_type(a) or get_origin(a) is not None]
        if len(structured) == 1:
            return structured[0]
    return tp


def _apply_override(
    raw: dict[str, Any], cls: type[Any], parts: tuple[str, ...], value: Any
) -> None:
    """Set ``parts`` in ``raw`` (a dict for ``cls``), checking each key against the schema."""
    node: Any = raw
    tp: Any = cls
    where = ""
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        tp = _strip_optional(tp)
        origin = get_origin(tp)
        if _is_dataclass_type(tp):
            hints = _hints(tp)
            if part not in hints:
                raise _unknown_key(part, where, list(hints))
            if not last and not isinstance(node.get(part), dict | list):
                default = _field_default(tp, part)
                node[part] = default if isinstance(default, dict | list) else {}
            child_type = hints[part]
        elif origin in _SEQUENCES:
            if not part.isdigit() or not isinstance(node, list) or int(part) >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    f"{_join(where, part)}: {where!r} is a list of {size} item(s); address an "
                    "item by its index, or set the whole list"
                )
            args = get_args(tp)
            child_type = args[int(part)] if origin is tuple and Ellipsis not in args else args[0]
            part_key: Any = int(part)
            if not last and not isinstance(node[part_key], dict | list):
                node[part_key] = {}
            if last:
                node[part_key] = value
                return
            node, tp, where = node[part_key], child_type, _join(where, part)
            continue
        elif origin in _MAPPINGS or tp is Any:
            child_type = get_args(tp)[1] if len(get_args(tp)) == 2 else Any
            if not last and not isinstance(node.get(part), dict):
                node[part] = {}
        else:
            raise ConfigError(f"{_join(where, part)}: {where!r} is a single value, not a section")
        if last:
            node[part] = value
            return
        node, tp, where = node[part], child_type, _join(where, part)


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a mapping.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file} must hold a mapping, not a {type(raw).__name__}")
    return raw


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    cls: type[T],
    *,
    overrides: Sequence[str] = (),
) -> T:
    """Build the dataclass ``cls`` from a YAML file or a mapping, then apply ``overrides``.

    Args:
        source: a YAML file path, or an already parsed mapping (not modified).
        cls: the config dataclass.
        overrides: ``key.path=value`` strings, applied in order (see the module docstring).

    Raises:
        ConfigError: unreadable file, unknown key (close names suggested), missing key, or
            invalid value; the message names the full key path.
    """
    raw = _plain_copy(source) if isinstance(source, Mapping) else read_yaml(source)
    where = "" if isinstance(source, Mapping) else f" (in {source})"
    try:
        for text in overrides:
            parts, value = parse_override(text)
            _apply_override(raw, cls, parts, value)
        return from_dict(raw, cls)
    except InvalidValue as exc:
        if not where:
            raise
        raise InvalidValue(exc.key, f"{exc.reason}{where}") from exc
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{exc}{where}") from exc


def to_dict(obj: Any) -> Any:
    """Plain YAML-able values: dataclasses -> dicts, tuples -> lists, paths -> strings.

    Raises:
        TypeError: a value of another kind (not a bool, int, float, str, None or container).
    """
    if _is_dataclass_type(type(obj)):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot write a {type(obj).__name__} to a config file")


def dump_config(obj: Any) -> str:
    """The config as YAML text, fields in declaration order (see :func:`to_dict`)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)

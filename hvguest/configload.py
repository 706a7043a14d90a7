"""Loading hvguest.yaml: YAML nodes -> checked settings objects, every error with its line.

The loader composes the YAML into nodes (never plain Python objects), so every error
names the file and the line of the offending key or value, and converts each value to
the type its field declares, then checks bounds, choices and validators. Only
``hvguest.config`` imports this module, and only when there is text to parse: a
daemon without a configuration file never loads the YAML parser.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import yaml

from hvguest.configbounds import Unbounded, check_expansion, check_shape
from hvguest.configschema import Config, SectionInfo
from hvguest.configsections import default_config, registered_sections
from hvguest.errors import ConfigError


class _Collector:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[ConfigError] = []

    def add(self, node: yaml.Node | None, message: str, line: int | None = None) -> None:
        if line is None and node is not None:
            line = node.start_mark.line + 1
        where = f"{self.filename}:{line}" if line is not None else self.filename
        self.errors.append(ConfigError(message, where=where))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)"
    if isinstance(value, int):
        return f"{value} (integer)"
    if isinstance(value, float):
        return f"{value:g} (number)"
    if isinstance(value, str):
        return repr(value)
    return type(value).__name__


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(tp, getattr(tp, "__name__", str(tp)))


_PLAIN_TEXT_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("int", "float", "bool", "timestamp")
)


class _BadValue(Exception):
    pass


def _convert(tp: Any, node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """Node -> Python value of type ``tp``; raises _BadValue(expected)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, node, loader)
            except _BadValue:
                continue
        raise _BadValue(_type_name(tp))
    if origin in (list, tuple):
        if not isinstance(node, yaml.SequenceNode):
            raise _BadValue(_type_name(tp))
        items = [_convert(args[0], item, loader) for item in node.value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise _BadValue("a mapping")
        out = {}
        for knode, vnode in node.value:
            out[_convert(args[0], knode, loader)] = _convert(args[1], vnode, loader)
        return out
    if not isinstance(node, yaml.ScalarNode):
        raise _BadValue(_type_name(tp))
    value = loader.construct_object(node, deep=True)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if member.value == value or str(member.value) == str(value):
                return member
        raise _BadValue(_type_name(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if node.style is None and node.tag in _PLAIN_TEXT_TAGS:
            # An unquoted 1000, 0644 or yes meant as text: keep what was written.
            return node.value
    elif tp is Any:
        return value
    raise _BadValue(_type_name(tp))


def _check(f: dataclasses.Field[Any], value: Any) -> str | None:
    md = f.metadata
    lo, hi = md.get("min"), md.get("max")
    if value is not None and (lo is not None or hi is not None):
        measure = value if isinstance(value, int | float) else len(value)
        unit = "" if isinstance(value, int | float) else " long"
        if lo is not None and hi is not None and not lo <= measure <= hi:
            return f"expected a value between {lo:g} and {hi:g}{unit}, got {_describe(value)}"
        if lo is not None and measure < lo:
            return f"expected at least {lo:g}{unit}, got {_describe(value)}"
        if hi is not None and measure > hi:
            return f"expected at most {hi:g}{unit}, got {_describe(value)}"
    choices = md.get("choices")
    if choices is not None:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if item not in choices:
                wanted = ", ".join(str(c) for c in choices)
                return f"expected one of {wanted}, got {_describe(item)}"
    validate = md.get("validate")
    if validate is not None:
        try:
            problem = validate(value)
        except ValueError as exc:
            problem = str(exc)
        if problem:
            return str(problem)
    return None


def _build_section(
    info: SectionInfo,
    node: yaml.Node,
    loader: yaml.SafeLoader,
    errors: _Collector,
    lines: dict[str, int],
) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return info.cls()
    if not isinstance(node, yaml.MappingNode):
        errors.add(node, f"{info.name}: expected a mapping of settings")
        return info.cls()
    hints = typing.get_type_hints(info.cls)
    fields = {f.name: f for f in dataclasses.fields(info.cls) if f.init}
    values: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = knode.value if isinstance(knode, yaml.ScalarNode) else None
        if not isinstance(key, str) or key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            errors.add(knode, f"{info.name}: unknown key {key!r} (known: {known})")
            continue
        if key in values:
            errors.add(knode, f"{info.name}.{key}: given twice")
            continue
        lines[f"{info.name}.{key}"] = knode.start_mark.line + 1
        f = fields[key]
        try:
            value = _convert(hints[key], vnode, loader)
        except _BadValue as exc:
            shown = vnode.value if isinstance(vnode, yaml.ScalarNode) else None
            got = f", got {shown!r}" if shown is not None else ""
            errors.add(vnode, f"{info.name}.{key}: expected {exc}{got}")
            continue
        except (yaml.YAMLError, ValueError) as exc:
            # ValueError: e.g. an integer of more than 4300 digits
            errors.add(vnode, f"{info.name}.{key}: {str(exc)[:200]}")
            continue
        problem = _check(f, value)
        if problem:
            errors.add(vnode, f"{info.name}.{key}: {problem}")
            continue
        values[key] = value
    try:
        return info.cls(**values)
    except (TypeError, ValueError) as exc:
        # __post_init__ cross-field checks
        errors.add(node, f"{info.name}: {exc}")
        return info.cls()


def parse_config(text: str, filename: str) -> tuple[Config, list[ConfigError]]:
    """The configuration ``text`` describes (defaults where it has errors) and every
    error found, each naming ``filename`` and the line."""
    try:
        return _parse_bounded(text, filename)
    except (RecursionError, ValueError, TypeError) as exc:
        # The bounds above should make these unreachable; if a document still gets
        # here, it is reported like any other configuration error, not as a crash.
        errors = _Collector(filename)
        errors.add(None, f"cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}")
        return default_config(filename), errors.errors


def _parse_bounded(text: str, filename: str) -> tuple[Config, list[ConfigError]]:
    sections_info = registered_sections()
    errors = _Collector(filename)
    lines: dict[str, int] = {}
    try:
        check_shape(text)
    except Unbounded as exc:
        errors.add(None, str(exc), line=exc.line)
        return default_config(filename), errors.errors
    except yaml.MarkedYAMLError:
        pass  # reported with its line by the composer below
    except yaml.YAMLError as exc:
        errors.add(None, f"not valid YAML: {exc}")
        return default_config(filename), errors.errors
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses NUL and other control bytes
        errors.add(None, f"not valid YAML: {exc}")
        return default_config(filename), errors.errors
    try:
        try:
            root = loader.get_single_node()
            if root is not None:
                check_expansion(root)
        except Unbounded as exc:
            errors.add(None, str(exc), line=exc.line)
            root = None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            errors.add(None, f"not valid YAML: {exc.problem or exc}", line=line)
            root = None
        except yaml.YAMLError as exc:
            errors.add(None, f"not valid YAML: {exc}")
            root = None
        built: dict[str, Any] = {}
        if root is not None and not (
            isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"
        ):
            if not isinstance(root, yaml.MappingNode):
                errors.add(root, "expected a mapping of sections (kvp:, vss:, ...)")
            else:
                for knode, vnode in root.value:
                    name = knode.value if isinstance(knode, yaml.ScalarNode) else None
                    if not isinstance(name, str) or name not in sections_info:
                        known = ", ".join(sections_info)
                        errors.add(knode, f"unknown section {name!r} (known: {known})")
                        continue
                    if name in built:
                        errors.add(knode, f"section {name} given twice")
                        continue
                    lines[name] = knode.start_mark.line + 1
                    built[name] = _build_section(sections_info[name], vnode, loader, errors, lines)
    finally:
        loader.dispose()
    for name, info in sections_info.items():
        if name not in built:
            built[name] = info.cls()
    return Config(built, filename, lines), errors.errors

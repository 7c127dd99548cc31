"""Build frozen dataclasses from parsed YAML, with errors that name the file and the YAML path.

Each configuration field is declared once with `setting(...)`: its default, a sentence of
documentation and an optional check. The builder walks the dataclass's type hints, so a
field's type, default, check and doc live in one place (and the reference docs can be
generated from the same declarations).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import yaml

from forecaster.errors import ConfigError

Check = Callable[[Any], bool]
_REQUIRED = dataclasses.MISSING


def setting(default: Any = _REQUIRED, *, doc: str, check: tuple[Check, str] | None = None) -> Any:
    """Declare a configuration field: default (omit for required), what it means, and a check.

    `check` is `(predicate, expectation)`, e.g. `(lambda v: v > 0, "a positive integer")`;
    the expectation is what the error message says was expected.
    """
    metadata = {"doc": doc, "check": check}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple, a dataclass or a MappingProxyType for structured defaults")
    if isinstance(default, types.MappingProxyType):  # read-only, but unhashable: build one per instance
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


positive = (lambda v: v > 0, "a positive number")
positive_int = (lambda v: v > 0, "a positive integer")
non_negative = (lambda v: v >= 0, "a number >= 0")
probability = (lambda v: 0 <= v < 1, "a number in [0, 1)")
port = (lambda v: 0 < v < 65536, "a TCP port in 1..65535")


MASK = "***"
_SECRET = re.compile(r"pass(word|wd)|secret|token|credential|api_?key|private_?key", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether a setting's name (or YAML path) says it holds a credential, whose value is never shown."""
    return _SECRET.search(name) is not None


def redacted(value: Any) -> Any:
    """`value` with the value of every secret-named key replaced by MASK, at any depth."""
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: MASK if is_secret(str(k)) and v is not None else redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(v) for v in value)
    return value


def masked_repr(self) -> str:
    """A dataclass's repr with secret-named fields, and secret-named keys of its mappings, masked."""
    shown = []
    for field in dataclasses.fields(self):
        value = getattr(self, field.name)
        secret = is_secret(field.name) and value is not None
        shown.append(f"{field.name}={MASK if secret else repr(redacted(value))}")
    return f"{type(self).__qualname__}({', '.join(shown)})"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, where: str) -> str:
    """Replace ${VAR} and ${VAR:-default} from the environment; an unset VAR without default is an error."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {name} is not set and has no default (write ${{{name}:-default}})"
        )

    return _ENV.sub(value, text)


class Builder:
    """Turns one parsed YAML document into typed, frozen dataclasses, naming `source` in errors."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        where = f"{self.source}: {path}" if path else self.source
        return ConfigError(f"{where}: {message}")

    def build(self, cls: type, data: Any, path: str = "") -> Any:
        """Build dataclass `cls` from mapping `data`, rejecting unknown keys and missing required ones."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.fail(path, f"expected a mapping, got {_describe(data, path)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(map(str, data)) - set(fields))
        if unknown:
            raise self.fail(_join(path, unknown[0]), f"unknown key (expected one of: {', '.join(fields)})")
        values = {}
        for name, field in fields.items():
            field_path = _join(path, name)
            if name in data:
                values[name] = self.convert(hints[name], data[name], field_path, field.metadata.get("check"))
            elif field.default is _REQUIRED and field.default_factory is _REQUIRED:
                doc = field.metadata.get("doc", "")
                raise self.fail(field_path, f"missing required key ({doc})" if doc else "missing required key")
        try:
            return cls(**values)
        except ValueError as error:  # cross-field rules of __post_init__ say "field: expected ..., got ..."
            field, separator, message = str(error).partition(": ")
            if separator and field in fields:
                raise self.fail(_join(path, field), message) from None
            raise self.fail(path, str(error)) from None

    def convert(self, hint: Any, value: Any, path: str, check: tuple[Check, str] | None = None) -> Any:
        """Convert one YAML value to `hint`, then apply the field's check."""
        if isinstance(value, str) and "${" in value:
            value = self._expand(value, path, keep_text=_is_text(hint), verbatim=is_secret(path))
        converted = self._convert_type(hint, value, path)
        if check is not None and converted is not None:
            predicate, expectation = check
            if not predicate(converted):
                raise self.fail(path, f"expected {expectation}, got {_describe(value, path)}")
        return converted

    def _expand(self, value: str, path: str, keep_text: bool = False, verbatim: bool = False) -> Any:
        """Expand ${VAR}s, then read the text as YAML so `port: ${P:-9108}` gives an int.

        A string field keeps the text when YAML would make it something else ("0123", "on"),
        and text that is not valid YAML on its own stays text. A secret is always the text
        exactly as expanded: YAML would strip quotes, spaces and `#...` from a password.
        """
        text = expand_env(value, f"{self.source}: {path}")
        if verbatim:
            return text
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        if keep_text and parsed is not None and not isinstance(parsed, str):
            return text
        return parsed

    def _convert_type(self, hint: Any, value: Any, path: str) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self._convert_type(inner, value, path)
        if origin is Literal:
            if value not in args:
                raise self.fail(path, f"expected one of {', '.join(map(str, args))}, got {_describe(value, path)}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise self.fail(path, f"expected a list, got {_describe(value, path)}")
            return tuple(self._convert_type(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
        if origin is dict:
            if not isinstance(value, dict):
                raise self.fail(path, f"expected a mapping, got {_describe(value, path)}")
            return types.MappingProxyType({str(k): self._scalar(v, _join(path, str(k))) for k, v in value.items()})
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, path)
        return self._primitive(hint, value, path)

    def _primitive(self, hint: type, value: Any, path: str) -> Any:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise self.fail(path, f"expected true or false, got {_describe(value, path)}")
        if hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self.fail(path, f"expected an integer, got {_describe(value, path)}")
        if hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value):
                return float(value)
            raise self.fail(path, f"expected a finite number, got {_describe(value, path)}")
        if hint is str:
            if isinstance(value, str) and value:
                return value
            raise self.fail(path, f"expected a non-empty string, got {_describe(value, path)}")
        if hint is datetime.date:  # YAML reads 2024-12-25 as a date; quoted, it is text
            return self._date(value, path)
        raise TypeError(f"unsupported configuration type {hint!r} at {path}")

    def _date(self, value: Any, path: str) -> datetime.date:
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(path, f"expected a date such as 2024-12-25, got {_describe(value, path)}")

    def _scalar(self, value: Any, path: str) -> Any:
        """Pass-through settings (Kafka client options) may be any scalar or list of scalars."""
        if isinstance(value, str) and "${" in value:
            value = self._expand(value, path, verbatim=is_secret(path))
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
            return tuple(value)
        raise self.fail(path, f"expected a scalar or a list of scalars, got {_describe(value, path)}")


def _is_text(hint: Any) -> bool:
    """Whether a field holds a string: `str` or `str | None`."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return hint is str or (optional and str in typing.get_args(hint))


def _finite(number: int | float) -> bool:
    """math.isfinite, but an integer too large for a float counts as infinite rather than raising."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any, path: str = "") -> str:
    """What arrived, for an error message; never the value of a secret (a password is not echoed to logs)."""
    if value is None:
        return "nothing (null)"
    if is_secret(path):
        return f"a {type(value).__name__} (value not shown: secret)"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__} {redacted(value)!r}"[:120]
    return repr(value)


def read_yaml(path: str, display: str) -> Any:
    """Parse one YAML file safely (no Python object tags), naming it in any error."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found") from None
    except OSError as error:  # a directory, no permission
        raise ConfigError(f"{display}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{display}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{display}: not valid YAML{at}: {getattr(error, 'problem', error)}") from None
    except ValueError as error:  # PyYAML builds a date such as 2024-13-01 and fails without saying where
        raise ConfigError(f"{display}: not valid YAML: an impossible date or time ({error})") from None


def documented_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(path, type, default, doc) for every field of `cls`, recursively: the source of the config reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        path = _join(prefix, field.name)
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            rows.append((path, "mapping", None, field.metadata.get("doc", "")))
            rows.extend(documented_fields(hint, path))
            continue
        default = field.default if field.default is not _REQUIRED else "(required)"
        if field.default_factory is not _REQUIRED:
            default = dict(field.default_factory())
        if dataclasses.is_dataclass(default):
            default = None
        rows.append((path, _type_name(hint), default, field.metadata.get("doc", "")))
    return rows


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) if a is not type(None) else "null" for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))

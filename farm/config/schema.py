"""A small typed reader over a YAML mapping: every wrong key, type or value names its line."""

from __future__ import annotations

import difflib
import sys
from typing import Any

from farm.config.yamlsrc import Source

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def _is(value: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


class Node:
    """A mapping at `path` inside `src`; reads keys once, then `done()` rejects unknown ones."""

    def __init__(self, src: Source, path: tuple, data: Any, what: str):
        self.src, self.path, self.what = src, path, what
        if not isinstance(data, dict):
            raise src.error(path, f"{what} must be a mapping, not {_kind(data)}",
                            "write it as `key: value` lines")
        self.data: dict[str, Any] = data
        self._read: set[str] = set()

    def error(self, key: str | None, what: str, todo: str):
        return self.src.error(self.path + ((key,) if key else ()), what, todo)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, typ: type, default: Any = None, *, required: bool = False) -> Any:
        self._read.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(None, f"{self.what} has no '{key}'",
                                 f"add `{key}:` ({_TYPE_NAMES.get(typ, typ.__name__)})")
            return default
        value = self.data[key]
        if not _is(value, typ):
            raise self.error(key, f"'{key}' must be {_TYPE_NAMES.get(typ, typ.__name__)}, "
                                  f"not {_kind(value)} ({value!r})",
                             f"write {key}: <{_TYPE_NAMES.get(typ, typ.__name__)}>")
        if typ is float and not -sys.float_info.max <= value <= sys.float_info.max:  # nan, inf, 1e400
            raise self.error(key, f"'{key}' is {value}, not a finite number", f"write {key}: <a number>")
        return float(value) if typ is float else value

    def choice(self, key: str, choices: list[str], default: str | None = None, *,
               required: bool = False) -> str | None:
        value = self.get(key, str, default, required=required)
        if value is not None and value not in choices:
            raise self.error(key, f"'{key}' is '{value}', which is not one of: {', '.join(choices)}",
                             f"use one of {', '.join(choices)}")
        return value

    def number(self, key: str, typ: type, default: Any = None, *, lo: float | None = None,
               hi: float | None = None, required: bool = False) -> Any:
        value = self.get(key, typ, default, required=required)
        if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise self.error(key, f"'{key}' is {value}, out of range", f"use a value {rng}")
        return value

    def str_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.get(key, list, default if default is not None else [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.src.error(self.path + (key, i), f"'{key}' items must be strings, "
                                     f"not {_kind(item)} ({item!r})", "quote the item")
        return list(value)

    def int_list(self, key: str, default: list[int] | None = None) -> list[int] | None:
        value = self.get(key, list, default)
        for i, item in enumerate(value or []):
            if not _is(item, int) or item <= 0:
                raise self.src.error(self.path + (key, i), f"'{key}' items must be positive integers, "
                                     f"not {item!r}", "write e.g. [1, 3, 224, 224]")
        return value

    def child(self, key: str, what: str, *, required: bool = False) -> Node | None:
        self._read.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(None, f"{self.what} has no '{key}'", f"add a `{key}:` mapping")
            return None
        return Node(self.src, self.path + (key,), self.data[key], what)

    def done(self) -> None:
        """Reject keys nobody read: typos must not be silently ignored."""
        for key in self.data:
            if key not in self._read:
                close = difflib.get_close_matches(key, sorted(self._read), n=1)
                hint = f"did you mean '{close[0]}'?" if close else \
                    f"known keys: {', '.join(sorted(self._read))}"
                raise self.error(key, f"unknown key '{key}' in {self.what}", hint)


def given(cls: type, **values: Any) -> Any:
    """cls built from the values a file gave (None: not given); the rest take cls's field defaults,
    so every default is written once, on its dataclass."""
    return cls(**{k: v for k, v in values.items() if v is not None})


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)

"""YAML loading that remembers the line of every key, so errors can point at file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from farm.errors import ConfigError


@dataclass
class Source:
    """A parsed YAML document plus the line of every node in it."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, path: tuple) -> int:
        """Line of the node at `path`, or of its nearest ancestor that has one."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple, what: str, todo: str) -> ConfigError:
        return ConfigError(what, todo, file=self.file, line=self.line(path))


MAX_VALUES = 100_000  # values in a file once its aliases are expanded: far above any farm config
MAX_DEPTH = 32  # levels of nesting, aliases expanded


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose composer measures every node as `_build` will expand it (each alias a
    copy of its anchor's value), so a file that would grow past MAX_VALUES or MAX_DEPTH, or an
    alias inside its own anchor, is refused at the alias responsible before anything is built."""

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file, self.depth, self.values = file, 0, 0
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) → (values, levels), once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.measured:  # still being composed
                raise self._error(event, f"alias '*{event.anchor}' is inside the value it names "
                                  f"('&{event.anchor}'), which would make that value infinite",
                                  f"use *{event.anchor} only outside &{event.anchor}")
            node = super().compose_node(parent, index)  # an undefined alias: ComposerError
            self._count(*self.measured[id(node)], event)
            return node
        self._count(1, 1, event)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        self.measured[id(node)] = (1 + sum(self.measured[id(k)][0] for k in kids),
                                   1 + max((self.measured[id(k)][1] for k in kids), default=0))
        return node

    def _count(self, values: int, levels: int, event: yaml.Event) -> None:
        """Add a value (an alias: its anchor's whole value) at the current depth."""
        self.values += values
        if self.values > MAX_VALUES:
            raise self._error(event, f"the file has more than {MAX_VALUES} values once its aliases "
                              "are expanded", "a farm config is far smaller: use fewer or smaller "
                              "aliases (*name)")
        if self.depth + levels > MAX_DEPTH:
            raise self._error(event, f"values nest deeper than {MAX_DEPTH} levels (aliases expanded)",
                              "flatten the file")

    def _error(self, event: yaml.Event, what: str, todo: str) -> ConfigError:
        return ConfigError(what, todo, file=self.file, line=event.start_mark.line + 1)


def _build(node: yaml.Node, path: tuple, lines: dict, file: str, loader: _Loader) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("a mapping key must be a plain name", "write `key: value`",
                                  file=file, line=key_node.start_mark.line + 1)
            if key in out:
                raise ConfigError(f"duplicate key '{key}'", "keep only one of them",
                                  file=file, line=key_node.start_mark.line + 1)
            out[key] = _build(value_node, path + (key,), lines, file, loader)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), lines, file, loader) for i, v in enumerate(node.value)]
    return _scalar(node, file, loader)


def _scalar(node: yaml.ScalarNode, file: str, loader: _Loader) -> Any:
    """PyYAML's safe constructor resolves int/float/bool/null/str and explicit tags such as !!int;
    a value its tag cannot hold, or an unknown tag, is a ConfigError at the value's line."""
    tag, line = node.tag.replace("tag:yaml.org,2002:", "!!"), node.start_mark.line + 1
    if node.tag not in loader.yaml_constructors:
        raise ConfigError(f"unknown YAML tag '{tag}'", "remove the tag: plain values need none",
                          file=file, line=line)
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError):
        value = node.value if len(node.value) <= 40 else f"{node.value[:20]}... ({len(node.value)} characters)"
        raise ConfigError(f"'{value}' is not a valid {tag} value", "fix the value, or remove the tag",
                          file=file, line=line) from None


def load_yaml(path: str | Path) -> Source:
    """Parse a YAML file; syntax errors become ConfigError with the line."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read file ({e.strerror})", "check the path", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", "save it as UTF-8", file=file) from None
    try:
        loader = _Loader(text, file)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {e.problem or e.context}", "fix the syntax",
                          file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", "fix the syntax", file=file) from None
    lines: dict[tuple, int] = {}
    data = _build(node, (), lines, file, loader) if node is not None else None
    return Source(file, data, lines)

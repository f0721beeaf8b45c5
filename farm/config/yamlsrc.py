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


def _build(node: yaml.Node, path: tuple, lines: dict, file: str, loader: yaml.SafeLoader) -> Any:
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
    # Scalars: PyYAML's safe constructor resolves int/float/bool/null/str.
    return loader.construct_object(node, deep=True)


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
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {e.problem or e.context}", "fix the syntax",
                          file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", "fix the syntax", file=file) from None
    lines: dict[tuple, int] = {}
    try:
        data = _build(node, (), lines, file, loader) if node is not None else None
    except yaml.YAMLError as e:  # e.g. an unparseable timestamp scalar
        raise ConfigError(f"invalid YAML value: {e}", "fix the value", file=file) from None
    return Source(file, data, lines)

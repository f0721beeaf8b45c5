"""devices.yaml: the registry of devices, validated up front into dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.config.schema import Node, given
from farm.config.suites import read_timeouts
from farm.config.transports import EMULATED, TransportKind, TransportSpec, read_transport
from farm.config.yamlsrc import Source, load_yaml
from farm.errors import ConfigError

FAMILIES = ["x86", "arm", "hexagon"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: `$` would let a final newline in
MAX_NAME = 64  # device names become file and directory names, tracker keys and table cells


@dataclass(frozen=True)
class TargetSpec:
    """What the device's code is compiled for: a family plus TVM target attributes."""

    family: str
    mcpu: str | None = None  # "host": resolved to this machine's CPU at run time
    mtriple: str | None = None
    mattr: tuple[str, ...] = ()
    tag: str | None = None  # TVM target tag, e.g. qcom/hexagon-v68

    def describe(self) -> str:
        if self.tag:
            return self.tag
        parts = [self.family, self.mcpu or ""] + [a for a in self.mattr]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class Device:
    name: str
    target: TargetSpec
    transport: TransportSpec
    threads: int = 1
    tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # host CPU features the device needs to run on this machine
    emulated: bool = False
    key: str = ""  # tracker key the device's server registers under
    line: int = 0  # where it is declared, for later error messages
    file: str = ""
    retries: int = 1  # a failing device is brought up again this many times, then quarantined
    retry_backoff: float = 2.0  # seconds before the first retry, doubling after each
    timeouts: dict[str, float] = field(default_factory=dict)  # overrides the suite's timeouts

    def matches(self, selector: str) -> bool:
        return selector in ("all", self.name) or selector in self.tags


@dataclass
class Registry:
    file: str
    devices: list[Device]

    def get(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise ConfigError(f"no device named '{name}' in {self.file}",
                          f"use one of: {', '.join(d.name for d in self.devices)}")

    def unknown(self, selector: str) -> ConfigError | None:
        """The error of a selector no device matches (callers add where it was written)."""
        if any(d.matches(selector) for d in self.devices):
            return None
        return ConfigError(f"no device or tag '{selector}' in {self.file}",
                           f"use one of: {', '.join(d.name for d in self.devices)}")

    def select(self, selectors: list[str]) -> list[Device]:
        """Devices matching any selector (name, tag or 'all'), in registry order."""
        for s in selectors:
            if error := self.unknown(s):
                raise error
        return [d for d in self.devices if any(d.matches(s) for s in selectors)]


def _target(node: Node) -> TargetSpec:
    family = node.choice("family", FAMILIES, required=True)
    spec = TargetSpec(
        family=family,
        mcpu=node.get("mcpu", str),
        mtriple=node.get("mtriple", str),
        mattr=tuple(node.str_list("mattr")),
        tag=node.get("tag", str),
    )
    if family == "hexagon" and not spec.tag:
        raise node.error(None, "a hexagon target needs a 'tag'", "add e.g. `tag: qcom/hexagon-v68`")
    if family != "hexagon" and spec.tag:
        raise node.error("tag", "'tag' is only for hexagon targets", "use mcpu/mtriple/mattr instead")
    for attr in spec.mattr:
        if not re.fullmatch(r"[+-][A-Za-z0-9_.-]+", attr):
            raise node.error("mattr", f"mattr item {attr!r} must start with + or -, then only letters, "
                                      "digits, '.', '_' and '-'",
                             "write e.g. [+neon, +dotprod]")
    node.done()
    return spec


def _device(src: Source, index: int, data: Any) -> Device:
    node = Node(src, ("devices", index), data, f"device #{index + 1}")
    name = node.get("name", str, required=True)
    if len(name) > MAX_NAME:
        raise node.error("name", f"device name '{name[:20]}...' is {len(name)} characters long",
                         f"use at most {MAX_NAME}")
    if not _NAME.fullmatch(name):
        raise node.error("name", f"device name {name!r} has characters other than letters, digits, "
                                 "'.', '_' and '-'", "rename it")
    node.what = f"device '{name}'"
    target = _target(node.child("target", f"target of '{name}'", required=True))
    tnode = node.child("transport", f"transport of '{name}'")
    transport = read_transport(tnode) if tnode else TransportSpec()
    if transport.kind == TransportKind.LOCAL and target.family != "x86":
        raise node.error("transport", f"a local device runs on this x86 machine, but '{name}' "
                                      f"is {target.family}", "use transport kind qemu, ssh or tracker")
    device = given(
        Device,
        name=name,
        target=target,
        transport=transport,
        threads=node.number("threads", int, lo=1),
        tags=tuple(node.str_list("tags")),
        requires=tuple(node.str_list("requires")),
        emulated=node.get("emulated", bool, transport.kind in EMULATED),
        key=node.get("key", str, name),
        line=src.line(("devices", index)),
        file=src.file,
        retries=node.number("retries", int, lo=0, hi=10),
        retry_backoff=node.number("retry_backoff", float, lo=0, hi=600),
        timeouts=read_timeouts(node.child("timeouts", f"timeouts of '{name}'")),
    )
    node.done()
    return device


def load_devices(path: str | Path) -> Registry:
    """Read and validate a devices.yaml; raises ConfigError with file:line on the first problem."""
    src = load_yaml(path)
    root = Node(src, (), src.data, "devices file")
    items = root.get("devices", list, required=True)
    root.done()
    if not items:
        raise src.error(("devices",), "the device list is empty", "register at least one device")
    devices: list[Device] = []
    seen: dict[str, int] = {}
    for i, data in enumerate(items):
        device = _device(src, i, data)
        if device.name in seen:
            raise src.error(("devices", i, "name"), f"duplicate device name '{device.name}' "
                            f"(first at line {seen[device.name]})", "give each device its own name")
        seen[device.name] = device.line
        devices.append(device)
    return Registry(src.file, devices)

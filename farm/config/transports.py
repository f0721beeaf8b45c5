"""The `transport:` of a device: its kind and that kind's own typed, validated options (each
default once, on its dataclass field: see schema.given)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from farm.config.schema import Node, given


class TransportKind(StrEnum):
    LOCAL = "local"
    TRACKER = "tracker"
    QEMU = "qemu"
    SSH = "ssh"
    HEXAGON_SIM = "hexagon-sim"


EMULATED = {TransportKind.QEMU, TransportKind.HEXAGON_SIM}
NEEDS_TRACKER = {TransportKind.LOCAL, TransportKind.QEMU, TransportKind.SSH}  # servers the farm starts


@dataclass(frozen=True)
class LocalOptions:
    host: str = "127.0.0.1"  # where the rpc_server listens


@dataclass(frozen=True)
class TrackerOptions:
    host: str
    port: int


@dataclass(frozen=True)
class QemuOptions:
    cpu: str = "max"
    sysroot: str | None = None  # default: the shared cache (farm devices emulate arm64)
    arch: str = "aarch64"


@dataclass(frozen=True)
class SSHOptions:
    host: str
    port: int = 22
    user: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    workdir: str = "/tmp/farm"
    python: str = "python3"
    runtime: str = "installed"  # or push: farm copies push_from onto the board
    push_from: str | None = None
    tracker: str = "tunnel"  # or direct: the board reaches the tracker itself
    tracker_host: str | None = None  # direct: the tracker as the board sees it
    tracker_port: int | None = None
    # direct: where the board's server listens; None: the address farm reaches the board at, as
    # TVM's server has no authentication (0.0.0.0, every interface, only when written here)
    server_host: str | None = None
    connect_timeout: float = 10.0
    start_timeout: float = 120.0
    # a keepalive every `keepalive` s; the link is lost after `keepalive_count` unanswered ones
    keepalive: float = 5.0
    keepalive_count: int = 3


@dataclass(frozen=True)
class HexagonSimOptions:
    simulator: str = "auto"  # auto, qemu or sdk
    qemu_cpu: str = "v67"


Options = LocalOptions | TrackerOptions | QemuOptions | SSHOptions | HexagonSimOptions


@dataclass(frozen=True)
class TransportSpec:
    """How the device is reached."""

    kind: TransportKind = TransportKind.LOCAL
    options: Options = LocalOptions()

    def describe(self) -> str:
        o = self.options
        if isinstance(o, TrackerOptions):
            return f"tracker {o.host}:{o.port}"
        if isinstance(o, SSHOptions):
            return f"ssh {o.user + '@' if o.user else ''}{o.host}:{o.port}"
        return str(self.kind)


def _port(node: Node, key: str, required: bool = False) -> int | None:
    return node.number(key, int, lo=1, hi=65535, required=required)


def _local(node: Node) -> LocalOptions:
    """A local device's TVM rpc_server listens on loopback unless `allow_remote: true`, since the
    server has no authentication and runs whatever code reaches it."""
    options = given(LocalOptions, host=node.get("host", str))
    host, allow_remote = options.host, node.get("allow_remote", bool, False)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        loopback = False
    if not loopback and not allow_remote:
        raise node.error("host", f"host '{host}' is not a loopback address: TVM's RPC server has no "
                                 "authentication, so anyone reaching it could run code on this machine",
                         "use host: 127.0.0.1, or add `allow_remote: true` if only trusted machines "
                         "can reach it")
    return options


def _tracker(node: Node) -> TrackerOptions:
    return TrackerOptions(host=node.get("host", str, required=True), port=_port(node, "port", required=True))


def _qemu(node: Node) -> QemuOptions:
    return given(QemuOptions, cpu=node.get("cpu", str), sysroot=node.get("sysroot", str),
                  arch=node.choice("arch", ["aarch64"]))


def _ssh(node: Node) -> SSHOptions:
    if "password" in node.data:
        raise node.error("password", "passwords are never stored in devices.yaml",
                         "use `identity:` (a key file) or an ssh-agent")
    options = given(
        SSHOptions, host=node.get("host", str, required=True), port=_port(node, "port"),
        user=node.get("user", str), identity=node.get("identity", str),
        known_hosts=node.get("known_hosts", str), workdir=node.get("workdir", str),
        python=node.get("python", str), runtime=node.choice("runtime", ["installed", "push"]),
        push_from=node.get("push_from", str), tracker=node.choice("tracker", ["direct", "tunnel"]),
        tracker_host=node.get("tracker_host", str), tracker_port=_port(node, "tracker_port"),
        server_host=node.get("server_host", str),
        connect_timeout=node.number("connect_timeout", float, lo=0.1),
        start_timeout=node.number("start_timeout", float, lo=1.0),
        keepalive=node.number("keepalive", float, lo=0.2, hi=600),
        keepalive_count=node.number("keepalive_count", int, lo=1, hi=100))
    if options.runtime == "push" and not options.push_from:
        raise node.error("runtime", "`runtime: push` needs `push_from:`",
                         "add `push_from: <local directory with TVM for the board>`")
    return options


def _hexagon_sim(node: Node) -> HexagonSimOptions:
    return given(HexagonSimOptions, simulator=node.choice("simulator", ["auto", "qemu", "sdk"]),
                  qemu_cpu=node.get("qemu_cpu", str))


_READERS = {TransportKind.LOCAL: _local, TransportKind.TRACKER: _tracker, TransportKind.QEMU: _qemu,
            TransportKind.SSH: _ssh, TransportKind.HEXAGON_SIM: _hexagon_sim}


def read_transport(node: Node) -> TransportSpec:
    kind = TransportKind(node.choice("kind", list(TransportKind), required=True))
    options = _READERS[kind](node)
    node.done()
    return TransportSpec(kind, options)

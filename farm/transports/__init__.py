"""Transports: one interface (base.Transport), one module per way of reaching a device."""

from __future__ import annotations

from farm.config.devices import Device
from farm.config.transports import TransportKind
from farm.transports.base import FarmContext, Transport
from farm.transports.hexagon_sim import HexagonSimTransport
from farm.transports.local import LocalTransport
from farm.transports.qemu import QemuTransport
from farm.transports.ssh import SSHTransport
from farm.transports.tracker import TrackerTransport

TRANSPORTS: dict[TransportKind, type[Transport]] = {
    TransportKind.LOCAL: LocalTransport,
    TransportKind.QEMU: QemuTransport,
    TransportKind.TRACKER: TrackerTransport,
    TransportKind.SSH: SSHTransport,
    TransportKind.HEXAGON_SIM: HexagonSimTransport,
}


def make_transport(device: Device, ctx: FarmContext) -> Transport:
    return TRANSPORTS[device.transport.kind](device, ctx)

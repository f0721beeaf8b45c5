"""Transports: one interface (base.Transport), one module per way of reaching a device."""

from __future__ import annotations

from farm.config.devices import Device
from farm.transports.base import Availability, FarmContext, Transport
from farm.transports.hexagon_sim import HexagonSimTransport
from farm.transports.local import LocalTransport
from farm.transports.tracker import TrackerTransport


class _NotYetTransport(Transport):
    """A transport kind the registry accepts but this version of farm cannot drive yet."""

    kind = "unsupported"

    def availability(self) -> Availability:
        return Availability(False, f"transport '{self.device.transport.kind}' is not available "
                                   "in this version of farm")

    def open(self, timeout: float):
        raise NotImplementedError(self.device.transport.kind)


TRANSPORTS: dict[str, type[Transport]] = {
    "local": LocalTransport,
    "tracker": TrackerTransport,
    "hexagon-sim": HexagonSimTransport,
}


def make_transport(device: Device, ctx: FarmContext) -> Transport:
    return TRANSPORTS.get(device.transport.kind, _NotYetTransport)(device, ctx)

"""`tracker`: a device already served by an existing TVM tracker (a real board, a lab)."""

from __future__ import annotations

from farm.errors import DeviceFailure
from farm.transports.base import Availability
from farm.transports.rpc import RPCTransport, tracker_summary


class TrackerTransport(RPCTransport):
    def tracker_address(self) -> tuple[str, int]:
        o = self.device.transport.options
        return o.host, o.port

    def transport_availability(self) -> Availability:
        addr = self.tracker_address()
        try:
            summary = tracker_summary(addr, timeout=3.0)
        except DeviceFailure as e:
            return Availability(False, str(e), outage=True)
        if self.device.key not in summary["queue_info"]:
            return Availability(False, f"tracker {addr[0]}:{addr[1]} lists no server with key "
                                       f"'{self.device.key}'", outage=True)
        return Availability(True)

    def start(self) -> None:
        """Nothing to start, but a tracker that is down or lacks the key fails the bring-up now
        (and so the retries), instead of a session request queueing until its timeout."""
        avail = self.transport_availability()
        if not avail.runnable:
            raise DeviceFailure(avail.reason)

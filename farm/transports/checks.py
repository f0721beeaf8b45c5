"""`farm devices check NAME`: bring each named device up and down once, printing every step and,
at the first failing one, what failed and what to do."""

from __future__ import annotations

from collections.abc import Callable

from farm.config.devices import Device
from farm.config.transports import NEEDS_TRACKER
from farm.errors import FarmError
from farm.transports import make_transport
from farm.transports.base import FarmContext
from farm.transports.embedded import EmbeddedTracker


def check_devices(ctx: FarmContext, devices: list[Device], say: Callable[[str], None]) -> int:
    """0 when every device came up, 2 when one was unavailable or failed a step."""
    tracker: EmbeddedTracker | None = None
    bad = 0
    try:
        for d in devices:
            say(f"{d.name}:")
            transport = make_transport(d, ctx)
            avail = transport.availability()
            if not avail.runnable:
                say(f"  FAIL available: {avail.reason}")
                bad += 1
                continue
            try:
                if ctx.tracker is None and d.transport.kind in NEEDS_TRACKER:
                    tracker = EmbeddedTracker(ctx.log_dir)
                    ctx.tracker = tracker.start()
                transport.check(lambda line: say(f"  {line}"))
            except FarmError as e:  # DeviceFailure among them, with its kind
                kind = getattr(e, "kind", "config")
                say(f"  FAIL ({kind}): {e}")
                bad += 1
    finally:
        if tracker is not None:
            tracker.stop()
    return 2 if bad else 0

"""Keepalives on a link the farm holds (its SSH connection to a board, the tunnel's): a daemon
thread probes it every `interval` seconds, like OpenSSH's ServerAliveInterval/ServerAliveCountMax,
and once no probe has been answered for `interval × count` seconds the link is lost, with the
reason. The farm's blocked device calls poll `lost` (farm.run.watchdog), so a board that drops off
the network ends its checks in seconds instead of at the suite's timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LinkClosed(Exception):
    """The probe knows the link is gone (the connection closed): lost at once, not after count."""


class LinkWatch:
    def __init__(self, probe: Callable[[float], None], interval: float, count: int,
                 silent: Callable[[float], str], beat: Callable[[], None] = lambda: None):
        """probe(timeout) returns when the far end answered and raises when it did not;
        silent(seconds) says what a link quiet that long means; beat() runs before every probe
        (the heartbeat a board-side guard waits for)."""
        self.probe, self.interval, self.count = probe, interval, count
        self.silent, self.beat = silent, beat
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="farm-keepalive", daemon=True)

    @property
    def dead_after(self) -> float:
        return self.interval * self.count

    def start(self) -> LinkWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self) -> str | None:
        """Block until the link is lost (or the watch stopped); the reason."""
        self._thread.join()
        return self.lost

    def _loop(self) -> None:
        answered = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - whoever waits for the beat has gone: not the link
                pass
            try:
                self.probe(self.interval)
                answered = time.monotonic()
            except LinkClosed as e:
                self.lost = str(e)
                return
            except Exception:  # noqa: BLE001 - no answer (timeout, broken socket): counted below
                pass
            if time.monotonic() - answered >= self.dead_after:
                self.lost = self.silent(self.dead_after)
                return
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

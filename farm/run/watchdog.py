"""Bounded calls into devices: a hung device must never hang the run.

RPC calls block inside TVM's C++ socket code and cannot be interrupted from Python, so the call
runs in a daemon thread; on timeout, or as soon as `lost` names a cause (the transport's
keepalives found the link dead), the caller's `on_timeout` (stopping the transport, which kills
the server and so breaks the socket) releases it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from farm.errors import DeviceFailure, DeviceTimeout

T = TypeVar("T")


POLL = 0.25  # seconds between looks at `lost`
GRACE = 1.0  # seconds a broken call waits for `lost` to name why: the socket may break first


def _cause(lost: Callable[[], str | None]) -> str | None:
    deadline = time.monotonic() + GRACE
    while not (cause := lost()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return cause


def bounded(what: str, fn: Callable[[], T], timeout: float, on_timeout: Callable[[], None],
            lost: Callable[[], str | None] = lambda: None, basis: str = "") -> T:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, name=f"farm-{what}", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while worker.is_alive() and (left := deadline - time.monotonic()) > 0:
        worker.join(min(POLL, left))
        cause = lost() if worker.is_alive() else None
        if cause:
            on_timeout()
            raise DeviceFailure(f"{what} stopped: {cause}")
    if worker.is_alive():
        on_timeout()
        worker.join(5.0)
        raise DeviceTimeout(f"{what} did not finish within {timeout:.3g} s" + (f" ({basis})" if basis else ""))
    if "error" in box:
        cause = _cause(lost) if isinstance(box["error"], DeviceFailure) else None
        if cause:  # the call broke because the link did: say so, not what the socket said
            raise DeviceFailure(f"{what} stopped: {cause}")
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]

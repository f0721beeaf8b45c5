"""Bounded calls into devices: a hung device must never hang the run.

RPC calls block inside TVM's C++ socket code and cannot be interrupted from Python, so the call
runs in a daemon thread; on timeout the caller's `on_timeout` (stopping the transport, which
kills the server and so breaks the socket) releases it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from farm.errors import DeviceTimeout

T = TypeVar("T")


def bounded(what: str, fn: Callable[[], T], timeout: float, on_timeout: Callable[[], None]) -> T:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, name=f"farm-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        on_timeout()
        worker.join(5.0)
        raise DeviceTimeout(f"{what} did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]

"""Module-level functions for tests of platform.isolate: the child process imports them by name."""

from __future__ import annotations

import os
import time

from farm.errors import FarmError
from farm.models.tflite import run_litert


def double(x):
    return 2 * x


def die(sig: int):
    os.kill(os.getpid(), sig)


def refuse():
    raise FarmError("the model is odd", "fix it", file="m.yaml", line=3)


def hang():
    time.sleep(600)


def litert_ref_aborts(path, feeds, resolver="BUILTIN_REF"):
    """run_litert whose reference kernels abort as LiteRT's do on some real models."""
    if resolver == "BUILTIN_REF":
        os.abort()
    return run_litert(path, feeds, resolver)

"""Where the shipped configuration lives: devices.yaml and suites/ beside the package, unless the
working directory has its own."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def default_path(name: str) -> Path:
    """./NAME when present, else the one shipped beside the package."""
    local = Path(name)
    return local if local.exists() else REPO / name

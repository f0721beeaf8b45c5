"""Where a run's device logs are: <data_dir>/logs/<run_id>/ (farm run) or one folder deeper, one per
worker (farm matrix, the pytest plugin)."""

from __future__ import annotations

from pathlib import Path

LOG_TAIL_LINES = 15


def log_tail(data_dir: Path, run_id: str, device: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the device's server log of this run, headed by its path; '' when none."""
    root = data_dir / "logs" / run_id
    logs = sorted(root.rglob(f"server-{device}.log")) if root.is_dir() else []
    for log in logs:
        text = log.read_text(errors="replace").rstrip().splitlines()
        if text:
            return f"{log}:\n" + "\n".join(text[-lines:])
    return ""

"""Tuned schedule choices kept in the repository: tuned/<target>/<model>.json maps a conv's shape
key to its best Choice and the measured time; `farm tune` writes them, every build reads them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from farm.compile.schedules.plan import Choice
from farm.errors import FarmError

TUNED_DIR = Path(__file__).resolve().parents[3] / "tuned"


def target_id(target: dict) -> str:
    """A directory name for a target dict: its tag, or mcpu (+ triple when not the host's)."""
    if "tag" in target:
        return str(target["tag"]).replace("/", "-")
    parts = [str(target.get("mcpu", "generic"))]
    if "mtriple" in target:
        parts.append(str(target["mtriple"]).split("-")[0])
    return "-".join(parts)


def record_path(target: dict, model_stem: str, root: Path = TUNED_DIR) -> Path:
    return root / target_id(target) / f"{model_stem}.json"


_HASH = re.compile(r"-[0-9a-f]{16}(?=-|$)")  # the recipe hash in a builtin model's file name


def other_versions(path: Path) -> list[Path]:
    """Records beside `path` for another version of the same model (same name, other recipe
    hash): made for weights that no longer exist, so never used."""
    if not _HASH.search(path.stem) or not path.parent.is_dir():
        return []
    base = _HASH.sub("", path.stem)
    return sorted(p for p in path.parent.glob("*.json")
                  if p != path and _HASH.search(p.stem) and _HASH.sub("", p.stem) == base)


def load_choices(path: Path) -> dict[str, Choice]:
    """Shape key → Choice; an absent file means defaults. A corrupt file is a clear error."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: Choice(**v["choice"]) for k, v in data["kernels"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FarmError(f"tuned schedule record {path} is unreadable: {e}",
                        "delete it or run `farm tune` again") from None


def save_choices(path: Path, kernels: dict[str, dict]) -> None:
    """kernels: shape key → {"choice": Choice.to_json(), "ms": float, ...}; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"kernels": kernels}, indent=1, sort_keys=True))
    tmp.replace(path)

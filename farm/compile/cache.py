"""Content-addressed artifact cache: key = hash(model bytes, target, TVM version, options, farm's
compile code). An entry is a directory written atomically; a corrupt entry is detected and rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_COMPILE_DIR = Path(__file__).parent


def _code_hash() -> str:
    h = hashlib.sha256()
    for f in sorted(_COMPILE_DIR.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(model_path: Path, target: dict[str, Any], options: dict[str, Any]) -> str:
    import tvm

    h = hashlib.sha256()
    h.update(file_hash(model_path).encode())
    h.update(json.dumps(target, sort_keys=True).encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    h.update(tvm.__version__.encode())
    h.update(_code_hash().encode())
    return h.hexdigest()[:24]


class Cache:
    def __init__(self, root: Path):
        # absolute: artifacts are used from other working directories (a simulator runs its
        # executable from a scratch directory)
        self.root = root.resolve()

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata if it is complete and its files still hash as recorded."""
        entry = self.root / key
        try:
            meta = json.loads((entry / "meta.json").read_text())
            for name, digest in meta["files"].items():
                if file_hash(entry / name) != digest:
                    raise ValueError(f"{name} changed")
        except (OSError, ValueError, KeyError, TypeError):
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)  # corrupt: drop it, the caller rebuilds
            return None
        meta["dir"] = str(entry)
        return meta

    def store(self, key: str, build_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Record hashes of every file in build_dir and move it into place atomically."""
        meta = dict(meta, files={f.name: file_hash(f) for f in build_dir.iterdir() if f.is_file()})
        (build_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        entry = self.root / key
        try:
            os.rename(build_dir, entry)
        except OSError:  # another process stored the same key first; theirs is as good as ours
            shutil.rmtree(build_dir, ignore_errors=True)
        return self.lookup(key) or dict(meta, dir=str(entry))

    def new_build_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root, prefix=".build-"))

"""`runtime: push`: keep a directory on the board equal to a local one (e.g. a site-packages with
TVM built for the board), sending only files whose SHA-256 differs and removing files the local
side no longer has. The board's hashes are computed on the board (sha256sum), not remembered, so
a file changed there by hand is pushed again."""

from __future__ import annotations

import hashlib
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import DeviceFailure
from farm.transports.sshlink import run

_SKIP_DIRS = {"__pycache__"}
_PART = ".farm-part"  # uploads land under this suffix, then are renamed into place


@dataclass(frozen=True)
class PushStats:
    sent: int
    removed: int
    total: int
    sent_bytes: int


def local_hashes(root: Path) -> dict[str, str]:
    """Relative POSIX path → sha256 of every regular file under root (bytecode caches skipped)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not _SKIP_DIRS.intersection(rel.parts):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[rel.as_posix()] = h.hexdigest()
    return out


def remote_hashes(client, remote_dir: str, timeout: float) -> dict[str, str]:
    rc, out, err = run(client, f"cd -- {shlex.quote(remote_dir)} && find . -type f "
                               f"! -path '*/__pycache__/*' -exec sha256sum -- {{}} +",
                       timeout, "hashing the pushed files on the board")
    if rc != 0:
        raise DeviceFailure(f"cannot hash files in {remote_dir} on the board: "
                            f"{err.strip() or f'exit {rc}'} (is sha256sum installed?)")
    hashes = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("./"):
            hashes[name[2:]] = digest
    return hashes


def push(client, local: Path, remote_dir: str, timeout: float) -> PushStats:
    """Make `remote_dir` (absolute, on the board) hold exactly the files of `local`."""
    import paramiko

    want = local_hashes(local)
    have = remote_hashes(client, remote_dir, timeout)
    send = [rel for rel, digest in want.items() if have.get(rel) != digest]
    drop = [rel for rel in have if rel not in want]
    sent_bytes = 0
    try:
        sftp = client.open_sftp()
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise DeviceFailure(f"the board's sshd offers no SFTP ({e}), which `runtime: push` needs: "
                            f"add `Subsystem sftp internal-sftp` to its sshd_config") from None
    try:
        sftp.get_channel().settimeout(timeout)
        made: set[str] = set()
        for rel in send:
            target = PurePosixPath(remote_dir, rel)
            _mkdirs(sftp, target.parent, made)
            src = local / rel
            sftp.put(str(src), f"{target}{_PART}")
            sftp.chmod(f"{target}{_PART}", stat.S_IMODE(src.stat().st_mode))
            sftp.posix_rename(f"{target}{_PART}", str(target))
            sent_bytes += src.stat().st_size
        for rel in drop:
            sftp.remove(str(PurePosixPath(remote_dir, rel)))
        sftp.close()
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise DeviceFailure(f"pushing {local} to {remote_dir} on the board failed: {e}") from None
    return PushStats(len(send), len(drop), len(want), sent_bytes)


def _mkdirs(sftp, path: PurePosixPath, made: set[str]) -> None:
    if str(path) in made or str(path) == "/":
        return
    _mkdirs(sftp, path.parent, made)
    try:
        sftp.stat(str(path))
    except OSError:
        sftp.mkdir(str(path))
    made.add(str(path))

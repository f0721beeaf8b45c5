"""A throwaway OpenSSH server on a free loopback port: its own config, host key and authorized
key in a temp directory; the machine's own SSH configuration is never read or changed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from farm.platform.procs import Child

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (the Debian unit makes it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "farm-test", "-f", str(path)],
                   check=True)
    return path


def known_hosts_line(host: str, port: int, pubkey: Path) -> str:
    kind, blob = pubkey.read_text().split()[:2]
    return f"{host if port == 22 else f'[{host}]:{port}'} {kind} {blob}\n"


class Sshd:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int | None = None,
                 prefix: tuple[str, ...] = ()):
        """prefix: what sshd runs under (`ip netns exec NS` for a board of its own)."""
        self.root, self.prefix = root, prefix
        root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.host_key = keygen(root / "host_ed25519")
        self.user_key = keygen(root / "user_ed25519")
        self.authorized = root / "authorized_keys"
        shutil.copy(root / "user_ed25519.pub", self.authorized)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(known_hosts_line(self.host, self.port, root / "host_ed25519.pub"))
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized}",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no", "AllowTcpForwarding yes", "X11Forwarding no", "PrintMotd no",
            "PermitTTY yes", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
        self.proc: Child | None = None

    def start(self, timeout: float = 20.0) -> Sshd:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.proc = Child("sshd", [*self.prefix, SSHD, "-D", "-e", "-f", str(self.config)],
                          self.root / "sshd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"sshd exited: {self.proc.tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not listen in time")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def processes_with(marker: str, where: str = "environ") -> list[int]:
    """Pids of this machine's processes whose environ (or cmdline) mentions `marker`: what the
    farm left running on the "board" or here."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            text = Path(f"/proc/{entry}/{where}").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            found.append(int(entry))
    return found


def devices_yaml(path: Path, sshd: Sshd, board: Path, target: str = "{family: x86}",
                 device: dict | None = None, **over) -> Path:
    """One ssh device `board` on `sshd`; `over`: transport options, `device`: the device's own."""
    opts = {"kind": "ssh", "host": sshd.host, "port": sshd.port, "user": "root",
            "identity": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
            "workdir": str(board), "python": sys.executable, "tracker": "tunnel",
            "connect_timeout": 5, "start_timeout": 120}
    opts.update(over)
    lines = [f"      {k}: {v}" for k, v in opts.items() if v is not None]
    own = "".join(f"    {k}: {v}\n" for k, v in (device or {}).items())
    path.write_text("devices:\n  - name: board\n    target: " + target + "\n" + own + "    transport:\n"
                    + "\n".join(lines) + "\n")
    return path

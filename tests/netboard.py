"""A board on a network of its own: a Linux network namespace joined to the test's namespace by a
veth pair (addresses of a /30 the test assigns itself), a real sshd inside, and the farm's own
venv as the board's python. Its link can be cut (the board's end taken down: packets vanish
silently, as when a cable is pulled), made to drop every packet (tc netem loss 100 %, or — on a
kernel without netem — blackhole routes at both ends), and restored."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.sshd import Sshd


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make a namespace board, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"farmprobe{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class NetBoard:
    def __init__(self, root: Path, name: str = "nsboard"):
        n = os.getpid() % 60000
        self.ns, self.name = f"farm{n}", name
        self.farm_if, self.board_if = f"fv{n}", f"bv{n}"
        subnet = 4 * (n % 30000)  # a /30 of 198.18.0.0/15, the block set aside for test networks
        base = f"198.{18 + subnet // 65536}.{subnet // 256 % 256}"
        self.farm_addr, self.addr = f"{base}.{subnet % 256 + 1}", f"{base}.{subnet % 256 + 2}"
        self.dropping: str | None = None
        self._make()
        self.sshd = Sshd(root, host=self.addr, port=22, prefix=("ip", "netns", "exec", self.ns)).start()

    def _make(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # an earlier test's
        _ip("link", "del", self.farm_if, check=False)
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.farm_if, "type", "veth", "peer", "name", self.board_if, "netns", self.ns)
        _ip("addr", "add", f"{self.farm_addr}/30", "dev", self.farm_if)
        _ip("link", "set", self.farm_if, "up")
        _ip("addr", "add", f"{self.addr}/30", "dev", self.board_if, ns=self.ns)
        _ip("link", "set", self.board_if, "up", ns=self.ns)
        _ip("link", "set", "lo", "up", ns=self.ns)

    # --- faults -----------------------------------------------------------------------------------
    def cut(self) -> None:
        _ip("link", "set", self.board_if, "down", ns=self.ns)

    def restore(self) -> None:
        _ip("link", "set", self.board_if, "up", ns=self.ns)

    def drop_all(self) -> str:
        """Drop every packet with the link up; says how."""
        if _ip("qdisc", "add", "dev", self.farm_if, "root", "netem", "loss", "100%", check=False).returncode == 0:
            self.dropping = "tc netem loss 100%"
        else:  # this kernel has no qdiscs: routes that discard, in both directions
            _ip("route", "add", "blackhole", f"{self.addr}/32")
            _ip("route", "add", "blackhole", f"{self.farm_addr}/32", ns=self.ns)
            self.dropping = "blackhole routes (the kernel has no tc netem)"
        return self.dropping

    def stop_dropping(self) -> None:
        if self.dropping and self.dropping.startswith("tc"):
            _ip("qdisc", "del", "dev", self.farm_if, "root", check=False)
        elif self.dropping:
            _ip("route", "del", "blackhole", f"{self.addr}/32", check=False)
            _ip("route", "del", "blackhole", f"{self.farm_addr}/32", ns=self.ns, check=False)
        self.dropping = None

    # --- what runs on the board -------------------------------------------------------------------
    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def farm_processes(self) -> list[str]:
        """The board's processes the farm started (its guard, server and the server's workers)."""
        found = []
        for pid in self.pids():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if b"FARM_SSH_RUN=" in env or b"FARM_SSH_GUARD=" in env:
                found.append(f"{pid} {cmd[:120]}")
        return found

    def signal_server(self, sig: int) -> int:
        """Send sig to the farm's server processes (not their guard); how many got it."""
        hit = 0
        for pid in self.pids():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if b"FARM_SSH_RUN=" in env:
                os.kill(pid, sig)
                hit += 1
        return hit

    def close(self) -> None:
        self.stop_dropping()
        self.sshd.stop()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        _ip("link", "del", self.farm_if, check=False)

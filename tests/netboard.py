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


def _ip(*args: str, ns: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`ip ARGS` here, or in the namespace held by process `ns`."""
    argv = [*(_enter(ns) if ns else ()), "ip", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _enter(holder: int) -> tuple[str, ...]:
    # nsenter, not `ip netns exec`: that remounts / and /sys, which fails in a chroot (CI's
    # fresh root), and `ip netns add` leaves a mount behind; a namespace held by a process needs
    # no mount at all and ends with its last process
    return ("nsenter", "-t", str(holder), "-n")


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make a namespace board, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        made = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True,
                              text=True)
    except FileNotFoundError:
        return "unshare (util-linux) is not installed"
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip() or made.returncode}"
    return None


class NetBoard:
    def __init__(self, root: Path, name: str = "nsboard"):
        n = os.getpid() % 60000
        self.name = name
        self.farm_if, self.board_if = f"fv{n}", f"bv{n}"
        subnet = 4 * (n % 30000)  # a /30 of 198.18.0.0/15, the block set aside for test networks
        base = f"198.{18 + subnet // 65536}.{subnet // 256 % 256}"
        self.farm_addr, self.addr = f"{base}.{subnet % 256 + 1}", f"{base}.{subnet % 256 + 2}"
        self.dropping: str | None = None
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.sshd = None
        try:
            self._make()
            self.sshd = Sshd(root, host=self.addr, port=22, prefix=_enter(self.holder.pid)).start()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        _ip("link", "del", self.farm_if, check=False)  # an earlier test's
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.02)  # until unshare has made the namespace and exec'd sleep
        ns = self.holder.pid
        _ip("link", "add", self.farm_if, "type", "veth", "peer", "name", self.board_if, "netns", str(ns))
        _ip("addr", "add", f"{self.farm_addr}/30", "dev", self.farm_if)
        _ip("link", "set", self.farm_if, "up")
        _ip("addr", "add", f"{self.addr}/30", "dev", self.board_if, ns=ns)
        _ip("link", "set", self.board_if, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)

    # --- faults -----------------------------------------------------------------------------------
    def cut(self) -> None:
        _ip("link", "set", self.board_if, "down", ns=self.holder.pid)

    def restore(self) -> None:
        _ip("link", "set", self.board_if, "up", ns=self.holder.pid)

    def drop_all(self) -> str:
        """Drop every packet with the link up; says how."""
        if _ip("qdisc", "add", "dev", self.farm_if, "root", "netem", "loss", "100%", check=False).returncode == 0:
            self.dropping = "tc netem loss 100%"
        else:  # this kernel has no qdiscs: routes that discard, in both directions
            _ip("route", "add", "blackhole", f"{self.addr}/32")
            _ip("route", "add", "blackhole", f"{self.farm_addr}/32", ns=self.holder.pid)
            self.dropping = "blackhole routes (the kernel has no tc netem)"
        return self.dropping

    def stop_dropping(self) -> None:
        if self.dropping and self.dropping.startswith("tc"):
            _ip("qdisc", "del", "dev", self.farm_if, "root", check=False)
        elif self.dropping:
            _ip("route", "del", "blackhole", f"{self.addr}/32", check=False)
            _ip("route", "del", "blackhole", f"{self.farm_addr}/32", ns=self.holder.pid, check=False)
        self.dropping = None

    # --- what runs on the board -------------------------------------------------------------------
    def pids(self) -> list[int]:
        """The processes in the board's namespace, its holder excepted."""
        ns, found = os.readlink(f"/proc/{self.holder.pid}/ns/net"), []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == ns:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

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
        """Everything in the namespace is killed; with its last process the namespace and the
        veth pair go."""
        self.stop_dropping()
        if self.sshd is not None:
            self.sshd.stop()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.holder.kill()
        self.holder.wait()
        _ip("link", "del", self.farm_if, check=False)

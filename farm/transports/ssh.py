"""`ssh`: a real board (Raspberry Pi, Jetson, x86 server) reached over SSH. start() connects (host
key verified), probes the board against the registered target, sweeps what earlier runs left,
makes a per-run work directory, starts TVM's rpc_server there under a board-side guard
(board_side.py), registered with the farm's tracker — directly, or through SSH port forwards
(`tunnel`) — and waits until the tracker lists it; stop() kills the server's process group and
removes the directory. While it is up, keepalives watch the link (liveness.py) and feed the
guard's heartbeat: a link that goes quiet is `lost` within keepalive × keepalive_count seconds,
and the guard then stops the server on the board by itself."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from farm.errors import DeviceFailure, DeviceTimeout
from farm.platform.host import parse_cpuinfo
from farm.platform.procs import Child, python_module
from farm.platform.targets import target_dict
from farm.transports.base import Availability
from farm.transports.liveness import LinkWatch
from farm.transports.local import needed_features
from farm.transports.rpc import RPCTransport, wait_registered
from farm.transports.sshlink import BoardRefused, Endpoint, connect, keepalive_probe, run
from farm.transports.sshpush import push
from farm.transports.sshtunnel import LOCAL_HOST, lost_file, silent

MIN_FREE_MB = 100
STOP_TIMEOUT = 15.0
BOARD_SIDE = (Path(__file__).parent / "board_side.py").read_text()
q = shlex.quote


def canonical_arch(name: str) -> str:
    """uname -m or an LLVM triple's arch → x86_64, i386, aarch64, arm or the name itself."""
    name = name.lower()
    if name in ("x86_64", "amd64"):
        return "x86_64"
    if re.fullmatch(r"i[3-6]86|x86", name):
        return "i386"
    if name in ("aarch64", "arm64"):
        return "aarch64"
    if name.startswith(("arm", "thumb")):
        return "arm"
    return name


def target_arch(device) -> str:
    triple = target_dict(device).get("mtriple")
    return canonical_arch(triple.split("-")[0]) if triple else "x86_64"


@dataclass(frozen=True)
class BoardInfo:
    arch: str
    cpu_model: str
    features: frozenset[str]


def _remote_path(path: str) -> str:
    """Quote a path for the board's shell, keeping a leading ~/ meaning the login's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + q(path[2:])
    return q(path)


class SSHTransport(RPCTransport):
    def __init__(self, device, ctx):
        super().__init__(device, ctx)
        o = self.opts = device.transport.options
        self.ep = Endpoint(o.host, o.port, o.user, o.identity,
                           o.known_hosts, o.connect_timeout)
        self.client = None
        self.tunnel: Child | None = None  # the port forwards (tracker: tunnel), see sshtunnel.py
        self.server = None  # the channel the server's guard runs on: its stdin is the heartbeat
        self.watch: LinkWatch | None = None
        self._guard_said = ""  # what the guard wrote to stderr (its reason and the log's tail)
        self.pid: int | None = None  # the server's process group on the board
        self.rundir: str | None = None
        self.pythonpath: str | None = None  # runtime: push puts the pushed directory here
        self.say: Callable[[str], None] = lambda line: None

    # --- cheap local checks -------------------------------------------------------------------
    def transport_availability(self) -> Availability:
        try:
            import paramiko  # noqa: F401
        except ImportError:
            return Availability(False, "paramiko is not installed (pip install paramiko)")
        o = self.opts
        for key, path in (("identity", o.identity), ("known_hosts", o.known_hosts)):
            if path and not os.path.isfile(os.path.expanduser(path)):
                return Availability(False, f"{key} file {path} does not exist")
        if o.runtime == "push" and not os.path.isdir(os.path.expanduser(o.push_from)):
            return Availability(False, f"push_from directory {o.push_from} does not exist")
        if self.device.target.mcpu == "host":
            return Availability(False, "`mcpu: host` means the farm's CPU, not the board's: name "
                                       "the board's CPU (e.g. cortex-a72) or leave mcpu out")
        return Availability(True)

    # --- bring-up -----------------------------------------------------------------------------
    def check(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.start()  # stops what it started when a step fails
        started = self.client is not None
        self.stop()
        if started:
            say("ok   stop: server killed, work directory removed")

    def start(self) -> None:
        try:
            self._bring_up(self.tracker_address())
        except BaseException:
            self.stop()
            raise

    def _bring_up(self, addr: tuple[str, int]) -> None:
        tracker = self._direct_tracker(addr) if self.opts.tracker == "direct" else None
        self.client = connect(self.ep)
        self.say(f"ok   connect: {self.ep.where}, host key verified, logged in")
        info = self._probe()
        self.say(f"ok   probe: {info.arch}, {info.cpu_model}")
        self._check_target(info)
        self.say(f"ok   target: {self.device.target.describe()} runs on this {info.arch} board")
        if self.opts.runtime == "push":
            self._push()
        python = self._check_python()
        self.say(f"ok   python: {python}{_version_note(python)}")
        free_mb, swept = self._make_rundir()
        self.say(f"ok   work directory: {self.rundir} ({free_mb} MB free{swept})")
        self._start_server(addr, tracker)
        self.say(f"ok   server: pid {self.pid} on the board, {self.opts.tracker} to the tracker")
        wait_registered(addr, self.device.key, self.opts.start_timeout, self._server_alive,
                        self._server_log)
        self.say(f"ok   registered: the tracker lists key '{self.device.key}'")

    def _run(self, command: str, what: str, timeout: float | None = None) -> tuple[int, str, str]:
        return run(self.client, command, timeout or self.ep.timeout, what)

    def _probe(self) -> BoardInfo:
        _, arch, _ = self._run("uname -m", "uname -m")
        _, cpu, _ = self._run("grep -m1 -iE '^(model name|hardware|cpu model)' /proc/cpuinfo; "
                              "grep -m1 -iE '^(flags|features)' /proc/cpuinfo", "reading /proc/cpuinfo")
        model, features = parse_cpuinfo(cpu)
        return BoardInfo(canonical_arch(arch.strip()), model, features)

    def _env(self) -> list[str]:
        return ["env"] + ([f"PYTHONPATH={self.pythonpath}"] if self.pythonpath else [])

    def _check_python(self) -> str:
        """'3.11.2 tvm 0.27.0' from the board's python, or refused when it has no TVM."""
        python = self.opts.python
        argv = self._env() + [python, "-c", 'import sys, tvm; '
                              'print(sys.version.split()[0], "tvm", tvm.__version__)']
        rc, out, err = self._run(shlex.join(argv), f"`import tvm` with {python}",
                                 self.opts.start_timeout)
        if rc != 0:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            raise BoardRefused(
                f"{python} on the board cannot import tvm (exit {rc}: {last}): install it there "
                f"(pip install apache-tvm==0.27.0.post1 tornado cloudpickle psutil), set `python:` "
                f"to an interpreter that has it, or push it (`runtime: push`)")
        return out.strip()

    def _push(self) -> None:
        root = _remote_path(self.opts.workdir)
        rc, out, err = self._run(f"mkdir -p -- {root}/runtime && cd -- {root}/runtime && pwd",
                                 "making the runtime directory")
        if rc != 0:
            raise BoardRefused(f"cannot make {self.opts.workdir}/runtime on the board "
                               f"({err.strip()}): set `workdir:` to a writable directory")
        remote = out.strip()
        local = Path(os.path.expanduser(self.opts.push_from))
        stats = push(self.client, local, remote, self.opts.start_timeout)
        self.pythonpath = remote
        self.say(f"ok   push: {stats.sent} of {stats.total} files changed and sent "
                 f"({stats.sent_bytes // 1024} KB), {stats.removed} removed, into {remote}")

    def _check_target(self, info: BoardInfo) -> None:
        want = target_arch(self.device)
        if want != info.arch:
            raise BoardRefused(f"the board is {info.arch} but '{self.device.name}' has a {want} "
                               f"target ({self.device.target.describe()}): fix the target in "
                               f"devices.yaml")
        missing = sorted(needed_features(self.device) - info.features)
        if missing:
            raise BoardRefused(f"the board's CPU ({info.cpu_model}) lacks {', '.join(missing)}, "
                               f"which the target uses: remove them from mattr/requires or pick "
                               f"the board's mcpu")

    def _board_side(self, *args: str) -> str:
        """A command running board_side.py with the board's python."""
        return shlex.join([*self._env(), self.opts.python, "-c", BOARD_SIDE, *args])

    def _make_rundir(self) -> tuple[int, str]:
        """Make this run's directory; (free MB there, what the sweep removed)."""
        root = _remote_path(self.opts.workdir)
        rc, out, err = self._run(f"mkdir -p -- {root} && cd -- {root} && "
                                 f"{self._board_side('sweep', '.')} && "
                                 f"d=$(mktemp -d \"$(pwd -P)\"/run-XXXXXX) && echo \"$d\" && "
                                 f"df -Pk \"$d\" | tail -n 1", "making the work directory")
        lines = [ln for ln in out.strip().splitlines() if not ln.startswith(("stale ", "killed "))]
        if rc != 0 or len(lines) < 2:
            raise BoardRefused(f"cannot make a work directory under {self.opts.workdir} on the "
                               f"board ({err.strip() or 'no output'}): set `workdir:` to a writable "
                               f"directory")
        self.rundir = lines[0]
        try:
            free_mb = int(lines[1].split()[3]) // 1024
        except (IndexError, ValueError):
            raise DeviceFailure(f"cannot read free disk space on the board: {lines[1]!r}") from None
        if free_mb < MIN_FREE_MB:
            raise DeviceFailure(f"only {free_mb} MB free in {self.rundir} on the board (need "
                                f"{MIN_FREE_MB}): free some space or set `workdir:` elsewhere")
        stale, killed = out.count("stale "), out.count("killed ")
        return free_mb, "".join([f"; killed {killed} servers an earlier run left" if killed else "",
                                 f"; removed {stale} stale run directories" if stale else ""])

    def _direct_tracker(self, addr: tuple[str, int]) -> str:
        """The tracker as the board reaches it by itself; refused when that is the board's own
        loopback while the board is another machine."""
        o = self.opts
        host, port = o.tracker_host or addr[0], o.tracker_port or addr[1]
        if _is_loopback(host) and not _is_loopback(self.ep.host):
            raise BoardRefused(f"with `tracker: direct` the board would look for the tracker at "
                               f"{host}:{port}, its own loopback: set `tracker_host`/`tracker_port` "
                               f"to a tracker the board can reach, or use `tracker: tunnel`")
        return f"{host}:{port}"

    def _server_args(self, addr: tuple[str, int], tracker: str | None) -> list[str]:
        o = self.opts
        if tracker is None:
            # board → farm: the tracker; farm → board: the server, same port number on both ends
            tracker_port, port = self._open_tunnel(addr)
            return ["--tracker", f"127.0.0.1:{tracker_port}", "--host", "127.0.0.1",
                    "--port", str(port), "--port-end", str(port + 1), "--custom-addr", LOCAL_HOST]
        listen = o.server_host or self.ep.host
        seen_as = listen if listen not in ("0.0.0.0", "::") else self.ep.host
        return ["--tracker", tracker, "--host", listen, "--port", "9090",
                "--port-end", "9199", "--custom-addr", seen_as]

    def _open_tunnel(self, addr: tuple[str, int]) -> tuple[int, int]:
        """Start the forwarding child; (tracker port on the board, server port on both ends)."""
        name = self.device.name
        ready = self._tunnel_ready()
        for old in (ready, lost_file(ready)):
            old.unlink(missing_ok=True)
        spec = {"endpoint": dataclasses.asdict(self.ep), "tracker": list(addr),
                "keepalive": [self.opts.keepalive, self.opts.keepalive_count]}
        self.tunnel = Child(f"ssh-tunnel-{name}",
                            python_module("farm.transports.sshtunnel", json.dumps(spec), str(ready)),
                            self.ctx.log_dir / f"tunnel-{name}.log", detached=self.ctx.detached)
        limit = 2 * self.ep.timeout + 30  # its own connect, plus imports
        deadline = time.monotonic() + limit
        while not ready.exists():
            if not self.tunnel.alive():
                raise DeviceFailure(f"the SSH tunnel to the board failed: {self.tunnel.tail(1)}")
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"the SSH tunnel to the board was not up within {limit:.0f} s")
            time.sleep(0.1)
        ports = json.loads(ready.read_text())
        return ports["tracker_port"], ports["server_port"]

    def _start_server(self, addr: tuple[str, int], tracker: str | None) -> None:
        o = self.opts
        server = ["env", f"TVM_NUM_THREADS={self.device.threads}", f"TMPDIR={self.rundir}",
                  f"FARM_SSH_RUN={self.rundir}", o.python, "-m", "tvm.exec.rpc_server",
                  "--key", self.device.key, *self._server_args(addr, tracker)]
        # the guard outlives the farm's heartbeats by one keepalive, so the farm notices first
        dead = o.keepalive * (o.keepalive_count + 1)
        command = (f"cd {q(self.rundir)} && exec env FARM_SSH_GUARD={q(self.rundir)} "
                   f"{self._board_side('guard', f'{dead:g}', self.rundir, *server)}")
        try:
            chan = self.client.get_transport().open_session(timeout=self.ep.timeout)
            chan.settimeout(self.ep.timeout)
            chan.exec_command(command)
            self.server, self._guard_said = chan, ""
            self.pid = _read_pid(chan, self.ep.timeout)
        except DeviceFailure:
            raise
        except Exception as e:  # noqa: BLE001 - paramiko: SSHException, socket.timeout, EOFError
            raise DeviceFailure(f"starting the RPC server on the board failed: "
                                f"{e or type(e).__name__}") from None
        self.watch = LinkWatch(keepalive_probe(self.client, self.ep.where), o.keepalive,
                               o.keepalive_count, silent, self._heartbeat).start()

    def _heartbeat(self) -> None:
        chan = self.server
        if chan is not None and not chan.closed:
            chan.send(b".")

    def link_lost(self) -> str | None:
        """The farm's own connection or the tunnel's (whichever noticed first), then the server."""
        cause = (self.watch.lost if self.watch is not None else None) or self._tunnel_lost()
        if cause:
            return f"link lost to {self.device.name} ({cause})"
        if self.server is not None and self.server.exit_status_ready():
            return f"the RPC server on {self.device.name} ended: {self._server_log()}"
        if self.tunnel is not None and not self.tunnel.alive():
            return f"the SSH tunnel to {self.device.name} ended: {self.tunnel.tail(1)}"
        return None

    def _tunnel_lost(self) -> str | None:
        if self.tunnel is None:
            return None
        try:
            return lost_file(self._tunnel_ready()).read_text() or None
        except OSError:
            return None

    def _tunnel_ready(self) -> Path:
        return self.ctx.log_dir / f"tunnel-{self.device.name}.json"

    def _server_alive(self) -> bool:
        return self.server is not None and not self.server.exit_status_ready()

    def _server_log(self) -> str:
        chan = self.server
        if chan is not None and chan.exit_status_ready():  # the guard's last line: the log is gone
            while chan.recv_stderr_ready():
                self._guard_said += chan.recv_stderr(4096).decode(errors="replace")
            return self._guard_said.strip().splitlines()[-1] if self._guard_said.strip() else \
                f"the guard exited ({chan.recv_exit_status()})"
        try:
            _, out, _ = self._run(f"tail -n 5 -- {q(self.rundir + '/server.log')}", "reading the log")
        except DeviceFailure as e:
            return str(e)
        return " | ".join(ln.strip() for ln in out.splitlines() if ln.strip()) or "(empty log)"

    # --- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        client, pid, rundir = self.client, self.pid, self.rundir
        self.client = self.pid = self.rundir = None
        if client is None:
            return
        lost = self.link_lost()
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        try:
            if lost is None:  # a lost link: the guard stops the server when the heartbeats stop
                self._stop_remote(client, pid, rundir)
        except DeviceFailure:
            pass  # the board is unreachable: its guard stops the server and removes the directory
        finally:
            if self.server is not None:
                self.server.close()
                self.server = None
            if self.tunnel is not None:
                self.tunnel.stop()
                self.tunnel = None
            client.close()

    @staticmethod
    def _stop_remote(client, pid: int | None, rundir: str | None) -> None:
        if pid:
            g = f"-{pid}"
            # CONT: a stopped (frozen) server acts on the TERM instead of waiting out the loop
            run(client, f"kill -TERM -- {g} 2>/dev/null; kill -CONT -- {g} 2>/dev/null; i=0; "
                        f"while kill -0 -- {g} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
                        f"kill -KILL -- {g} 2>/dev/null; true", STOP_TIMEOUT, "stopping the server")
        if rundir:
            run(client, f"rm -rf -- {q(rundir)}", STOP_TIMEOUT, "removing the work directory")


def _version_note(python: str) -> str:
    import tvm

    ours = f"tvm {tvm.__version__}"
    return "" if python.endswith(ours) else f" (the farm has {ours}: RPC may not match)"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _read_pid(chan, timeout: float) -> int:
    """The `farm-pid=N` line the start command prints before exec'ing the server."""
    buf, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(rb"farm-pid=(\d+)", buf)
        if m:
            return int(m.group(1))
        try:
            data = chan.recv(1024)
        except TimeoutError:
            break
        if not data:
            break
        buf += data
    if time.monotonic() >= deadline:
        raise DeviceTimeout(f"the RPC server did not start on the board within {timeout:g} s")
    raise DeviceFailure(f"the RPC server did not start on the board: "
                        f"{buf.decode(errors='replace').strip() or 'no output'}")

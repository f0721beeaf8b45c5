"""Sessions through a TVM RPC tracker: shared by every transport whose device runs TVM's
rpc_server (local, tracker, qemu, ssh)."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import numpy as np

from farm.config.suites import LatencySpec
from farm.errors import DeviceFailure, DeviceTimeout
from farm.platform.procs import Child, free_port
from farm.transports.base import DeviceSession, LoadedModel, Transport


def tracker_summary(addr: tuple[str, int], timeout: float = 5.0) -> dict:
    """The tracker's summary over a socket of our own, bounded by `timeout`: TVM's client takes
    its timeout from socket.setdefaulttimeout, process-wide state that the keepalive thread
    must not touch, and retries a refused connection for 60 s."""
    from tvm.rpc import base

    where = f"tracker {addr[0]}:{addr[1]}"
    try:
        with socket.create_connection(addr, timeout=timeout) as sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise DeviceFailure(f"{where} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, value = base.recvjson(sock)
    except OSError as e:
        raise DeviceFailure(f"{where} does not answer ({e.strerror or e or type(e).__name__})") from None
    except (RuntimeError, ValueError, struct.error) as e:
        raise DeviceFailure(f"{where} does not answer ({e})") from None
    if code != base.TrackerCode.SUCCESS:
        raise DeviceFailure(f"{where} refused the summary request ({value})")
    return value


def free_servers(addr: tuple[str, int], key: str) -> int:
    return tracker_summary(addr)["queue_info"].get(key, {}).get("free", 0)


def wait_registered(addr: tuple[str, int], key: str, timeout: float, alive=lambda: True,
                    why_dead=lambda: "") -> None:
    """Block until the tracker lists a free server under `key`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if free_servers(addr, key) > 0:
                return
        except DeviceFailure:
            pass  # the tracker may still be starting
        if not alive():
            raise DeviceFailure(f"the RPC server for '{key}' exited: {why_dead()}")
        if time.monotonic() > deadline:
            raise DeviceTimeout(f"no server registered under key '{key}' within {timeout:.0f} s")
        time.sleep(0.25)


class RPCModel(LoadedModel):
    def __init__(self, remote, lib_name: str):
        from tvm import relax

        self.remote = remote
        self.dev = remote.cpu()
        self.vm = relax.VirtualMachine(remote.load_module(lib_name), self.dev)

    def _args(self, inputs: list[np.ndarray]):
        import tvm

        return [tvm.runtime.tensor(x, self.dev) for x in inputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        # stateful call: a tuple result is fetched field by field (a remote Array has no .numpy).
        # Not VirtualMachine.get_outputs: its recursive closure makes a reference cycle that keeps
        # the VM, hence the RPC session and the device, busy until the garbage collector runs.
        self.vm.set_input("main", *self._args(inputs))
        self.vm.invoke_stateful("main")
        get = self.vm.module["get_output"]
        arity = self.vm.module["get_output_arity"]("main")  # -1: one tensor
        return [o.numpy() for o in ([get("main")] if arity < 0 else [get("main", i) for i in range(arity)])]

    def time(self, inputs: list[np.ndarray], spec: LatencySpec) -> list[float]:
        args = self._args(inputs)
        for _ in range(spec.warmup):
            self.vm["main"](*args)
        evaluator = self.vm.time_evaluator("main", self.dev, number=spec.number, repeat=spec.repeat,
                                           min_repeat_ms=spec.min_repeat_ms)
        return list(evaluator(*args).results)


class RPCSession(DeviceSession):
    def __init__(self, remote):
        self.remote = remote

    def load(self, lib: Path) -> LoadedModel:
        name = f"{lib.parent.name}-{lib.name}"  # unique per artifact: a server may cache by name
        try:
            self.remote.upload(str(lib), target=name)
            return RPCModel(self.remote, name)
        except Exception as e:  # RPC errors surface as TVMError/RPCError with remote tracebacks
            raise DeviceFailure(f"upload/load failed: {_last_line(e)}") from None

    def close(self) -> None:
        self.remote = None  # dropping the last reference closes the session


class RPCTransport(Transport):
    """A device reached through a tracker under `device.key`."""

    def tracker_address(self) -> tuple[str, int]:
        if self.ctx.tracker is None:
            raise DeviceFailure("no tracker is running for this farm")
        return self.ctx.tracker

    def open(self, timeout: float, limit: float = 0.0) -> DeviceSession:
        """limit: TVM's session timeout — the server kills the session's worker after it."""
        from tvm import rpc

        addr, key = self.tracker_address(), self.device.key
        summary = tracker_summary(addr)
        if key not in summary["queue_info"]:
            raise DeviceFailure(f"tracker {addr[0]}:{addr[1]} has no server with key '{key}'")
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)  # bounds the queue wait: request() blocks otherwise
        try:
            tracker = rpc.connect_tracker(*addr)
            remote = tracker.request(key, priority=1, session_timeout=limit)
        except TimeoutError:
            raise DeviceTimeout(f"no free '{key}' server within {timeout:.0f} s") from None
        except (OSError, RuntimeError) as e:
            raise DeviceFailure(f"cannot get a '{key}' session: {_last_line(e)}") from None
        finally:
            socket.setdefaulttimeout(old)
        return RPCSession(remote)


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


class LocalServerTransport(RPCTransport):
    """A device whose TVM rpc_server the farm runs as a child process on this machine (natively
    or under an emulator), registered with the farm's tracker under the device's key."""

    register_timeout: float = 60.0

    def __init__(self, device, ctx):
        super().__init__(device, ctx)
        self.server: Child | None = None

    def server_log(self) -> Path:
        return self.ctx.log_dir / f"server-{self.device.name}.log"

    def launch(self, argv: list[str], env: dict[str, str]) -> None:
        """Start the server and wait until the tracker lists it; stop it again on failure."""
        self.server = Child(f"rpc_server-{self.device.name}", argv, self.server_log(),
                            env={**env, "TVM_NUM_THREADS": str(self.device.threads)},
                            detached=self.ctx.detached)
        try:
            wait_registered(self.tracker_address(), self.device.key, self.register_timeout,
                            self.server.alive, self.server.tail)
        except DeviceTimeout as e:
            tail = self.server.tail()
            self.stop()
            raise DeviceTimeout(f"{e} (server log {self.server_log()}: {tail})") from None
        except DeviceFailure:
            self.stop()
            raise

    def server_args(self, host: str) -> list[str]:
        """Arguments of TVM's rpc_server that register it with the farm's tracker."""
        addr, port = self.tracker_address(), free_port(host)
        return ["--tracker", f"{addr[0]}:{addr[1]}", "--key", self.device.key, "--host", host,
                "--port", str(port), "--port-end", str(port + 100)]

    def pids(self) -> list[int]:
        return [self.server.pid] if self.server else []

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

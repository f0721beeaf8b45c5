"""An SSH connection to a board (paramiko): the host key verified against known_hosts (an unknown
or changed key is refused, never accepted silently), every command bounded by a timeout, and the
two port forwards a board behind NAT needs: board → farm (the tracker) and farm → board (its RPC
server). Callers quote every remote word with shlex.quote."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from farm.errors import DeviceFailure, DeviceTimeout
from farm.transports.liveness import LinkClosed

# paramiko logs failed handshakes as ERROR with a traceback; the farm reports them as one line
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class BoardRefused(DeviceFailure):
    """The board or its registration is wrong (host key, user key, architecture): a person must
    fix devices.yaml, known_hosts or the board; retrying will not help."""

    kind = "config"
    retryable = False


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str | None
    identity: str | None  # key file; None: ssh-agent and ~/.ssh/id_*
    known_hosts: str | None  # None: ~/.ssh/known_hosts
    timeout: float

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))


def _fingerprint(key) -> str:
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def _reject_unknown(ep: Endpoint):
    import paramiko

    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise BoardRefused(
                f"host key of {ep.known_hosts_name} ({_fingerprint(key)}) is not in "
                f"{ep.known_hosts_path()}: refusing to connect to an unverified host; check the "
                f"fingerprint on the board, then `ssh-keyscan -p {ep.port} {ep.host} >> "
                f"{ep.known_hosts_path()}`")

    return RejectUnknown()


def connect(ep: Endpoint):
    """An authenticated paramiko.SSHClient, or DeviceFailure saying which step failed and why."""
    import paramiko

    client = paramiko.SSHClient()
    kh = ep.known_hosts_path()
    if kh.exists():
        try:
            client.load_host_keys(str(kh))
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise BoardRefused(f"cannot read known_hosts {kh}: {e}") from None
    elif ep.known_hosts:
        raise BoardRefused(f"known_hosts file {kh} does not exist")
    client.set_missing_host_key_policy(_reject_unknown(ep))
    identity = os.path.expanduser(ep.identity) if ep.identity else None
    try:
        client.connect(ep.host, ep.port, username=ep.user, key_filename=identity,
                       allow_agent=identity is None, look_for_keys=identity is None,
                       timeout=ep.timeout, banner_timeout=ep.timeout, auth_timeout=ep.timeout,
                       channel_timeout=ep.timeout)
        return client
    except BaseException as e:
        transport = client.get_transport()
        spoke = transport is not None and bool(transport.remote_version)
        client.close()
        raise _connect_error(ep, identity, e, spoke) from None


def _connect_error(ep: Endpoint, identity: str | None, e: BaseException, spoke: bool) -> BaseException:
    import paramiko

    if isinstance(e, DeviceFailure) or not isinstance(e, Exception):
        return e
    if isinstance(e, paramiko.BadHostKeyException):
        return BoardRefused(
            f"host key of {ep.known_hosts_name} CHANGED: the board offers {_fingerprint(e.key)}, "
            f"{ep.known_hosts_path()} expects {_fingerprint(e.expected_key)}; if the board was "
            f"reinstalled, verify the new key and replace its line (`ssh-keygen -R "
            f"'{ep.known_hosts_name}' -f {ep.known_hosts_path()}`), otherwise do not connect")
    if isinstance(e, paramiko.PasswordRequiredException):
        return BoardRefused(f"identity {identity} is passphrase-protected: load it into ssh-agent "
                            f"(`ssh-add`) and drop `identity:` from devices.yaml")
    if isinstance(e, paramiko.AuthenticationException):
        who = f"key {identity}" if identity else "the ssh-agent's and ~/.ssh's keys"
        return BoardRefused(f"{ep.where} refused {who} ({e}): add the public key to "
                            f"~{ep.user or ''}/.ssh/authorized_keys on the board")
    if isinstance(e, TimeoutError) or (isinstance(e, paramiko.SSHException) and not spoke):
        return DeviceTimeout(f"no SSH answer from {ep.host}:{ep.port} within {ep.timeout:g} s "
                             f"(connect_timeout)")
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            reason = "; ".join(sorted({x.strerror or str(x) for x in e.errors.values()}))
        return DeviceFailure(f"cannot reach {ep.host}:{ep.port} ({reason}): is the board on and "
                             f"its sshd running?")
    if isinstance(e, (paramiko.SSHException, EOFError)):
        return DeviceFailure(f"SSH to {ep.where} failed: {e or type(e).__name__}")
    return e


def run(client, command: str, timeout: float, what: str) -> tuple[int, str, str]:
    """Run a (quoted) shell command on the board; (exit status, stdout, stderr)."""
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), stdout, stderr
    except TimeoutError:
        raise DeviceTimeout(f"{what} did not finish on the board within {timeout:g} s") from None
    except Exception as e:  # noqa: BLE001 - paramiko raises SSHException, EOFError, OSError
        raise DeviceFailure(f"{what} failed: the SSH connection broke ({e or type(e).__name__})") \
            from None


def keepalive_probe(client, where: str) -> Callable[[float], None]:
    """A LinkWatch probe: OpenSSH's own keepalive, a `keepalive@openssh.com` global request that
    the server must answer (with a failure: it is unknown there). paramiko's set_keepalive asks for
    no reply, so it cannot tell a dead link; its global_request waits without a timeout, so it runs
    in a thread of its own, at most one at a time."""
    pending: threading.Thread | None = None

    def probe(timeout: float) -> None:
        nonlocal pending
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise LinkClosed(f"the SSH connection to {where} closed")
        if pending is None or not pending.is_alive():
            pending = threading.Thread(target=transport.global_request,
                                       args=("keepalive@openssh.com",), daemon=True)
            pending.start()
        pending.join(timeout)
        if not transport.is_active():
            raise LinkClosed(f"the SSH connection to {where} closed")
        if pending.is_alive():
            raise TimeoutError

    return probe


def _relay(a, b) -> None:
    """Copy bytes both ways, one thread per direction (a single thread can deadlock when both
    directions fill their windows); when either side closes, close both."""
    def pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            for s in (a, b):
                try:
                    if isinstance(s, socket.socket):
                        s.shutdown(socket.SHUT_RDWR)  # wakes the other pump's recv
                    s.close()
                except OSError:
                    pass

    _spawn(pump, b, a)
    pump(a, b)


def _spawn(target: Callable, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


class Forwards:
    """The port forwards of one board connection; they end with the connection."""

    def __init__(self, client, timeout: float):
        self.transport = client.get_transport()
        self.timeout = timeout

    def remote_to_local(self, local: tuple[str, int]) -> int:
        """Listen on the board's loopback; each connection is relayed to `local` here. Returns the
        board-side port."""
        def handler(channel, origin, server):
            try:
                sock = socket.create_connection(local, timeout=self.timeout)
                sock.settimeout(None)
            except OSError:
                channel.close()
                return
            _spawn(_relay, channel, sock)

        try:
            port = self.transport.request_port_forward("127.0.0.1", 0, handler)
        except Exception as e:  # noqa: BLE001 - SSHException when the server forbids forwarding
            raise BoardRefused(f"the board's sshd refused a reverse port forward ({e}): set "
                               f"`AllowTcpForwarding yes` in its sshd_config, or use "
                               f"`tracker: direct`") from None
        return port

    def local_to_remote(self, bind_host: str, remote_host: str) -> int:
        """Listen on a free port of `bind_host` here; each connection is relayed to the same port
        of `remote_host` as the board sees it. Returns the port."""
        lsock = socket.socket()
        lsock.bind((bind_host, 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        _spawn(self._accept, lsock, (remote_host, port))
        return port

    def _accept(self, lsock: socket.socket, remote: tuple[str, int]) -> None:
        while True:
            conn, peer = lsock.accept()
            try:
                chan = self.transport.open_channel("direct-tcpip", remote, peer, timeout=self.timeout)
            except Exception:  # noqa: BLE001 - board gone or forwarding refused: drop the client
                conn.close()
                continue
            _spawn(_relay, conn, chan)

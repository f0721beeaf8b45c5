"""The SSH port forwards of a `tunnel` board, in a child process of their own.

They cannot live in the farm's process: a TVM RPC call can hold the GIL while it waits for the
reply, and that reply would have to pass through paramiko threads of the same process — a
deadlock. This child connects on its own (host key verified like the farm's connection), opens
board 127.0.0.1:<any> → the farm's tracker and 127.0.0.2:<port> → the board's 127.0.0.1:<port>,
writes both ports to a ready file, and exits when the SSH connection ends, its keepalives go
unanswered (liveness.py) or it is killed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from farm.transports.liveness import LinkWatch
from farm.transports.sshlink import Endpoint, Forwards, connect, keepalive_probe

# The farm's end of the forward to the board's server. Not 127.0.0.1: the server reports one port
# for both ends, and a board that is this very machine already listens on 127.0.0.1:<port>.
LOCAL_HOST = "127.0.0.2"


def lost_file(ready: Path) -> Path:
    """Where the child writes why its link was lost."""
    return ready.with_suffix(".lost")


def silent(seconds: float) -> str:
    return f"no SSH keepalive reply for {seconds:.0f} s"


def serve(ep: Endpoint, tracker: tuple[str, int], keepalive: tuple[float, int], ready: Path) -> int:
    client = connect(ep)
    forwards = Forwards(client, ep.timeout)
    tracker_port = forwards.remote_to_local(tracker)
    server_port = forwards.local_to_remote(LOCAL_HOST, "127.0.0.1")
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tracker_port": tracker_port, "server_port": server_port}))
    os.replace(tmp, ready)
    watch = LinkWatch(keepalive_probe(client, ep.where), *keepalive, silent).start()
    cause = watch.wait()
    # before the sockets close: the farm reads the cause when its RPC call breaks
    lost_file(ready).write_text(cause)
    print(f"link lost: {cause}", file=sys.stderr, flush=True)
    client.close()
    return 1


def main(argv: list[str]) -> int:
    spec, ready = json.loads(argv[0]), Path(argv[1])
    try:
        return serve(Endpoint(**spec["endpoint"]), tuple(spec["tracker"]), tuple(spec["keepalive"]),
                     ready)
    except Exception as e:  # noqa: BLE001 - the parent reads this line from the log
        print(f"tunnel failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

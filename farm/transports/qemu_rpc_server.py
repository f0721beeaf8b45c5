"""TVM's RPC server in this one process, for an emulated board: run as a script by the sysroot's
python under qemu-user (stdlib and tvm only, never `farm`).

`python -m tvm.exec.rpc_server` starts its server in a re-executed interpreter (PopenWorker), which
under qemu-user needs binfmt_misc and takes twice as long. Here the server state of
tvm.rpc.server (bind, register with the tracker, accept loop) runs in this process; each session
is still served in a forked child, so a model that crashes ends its session, not the server."""

import argparse
import logging
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tracker", required=True, help="HOST:PORT of the TVM tracker")
    p.add_argument("--key", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--port-end", type=int, required=True)
    args = p.parse_args()
    host, port = args.tracker.rsplit(":", 1)

    from tvm.rpc import server  # imported after parsing: ~8 s under emulation

    logging.getLogger("RPCServer").setLevel(logging.INFO)
    state = server.PopenRPCServerState(args.host, args.port, args.port_end,
                                       tracker_addr=(host, int(port)), key=args.key)
    print(f"farm-qemu-rpc-server: pid {os.getpid()} serving '{args.key}' on "
          f"{args.host}:{state.port}", flush=True)
    state.thread.join()  # runs until the farm kills this process group
    return 1  # the listen loop only returns on an error it already logged


if __name__ == "__main__":
    sys.exit(main())

"""The ssh transport against a real OpenSSH server on loopback: this machine plays the board, with
the test's own Python (which has TVM) as the board's python."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from farm.cli import main
from farm.config.devices import load_devices
from farm.config.suites import find_suite, load_suite
from farm.errors import ConfigError
from farm.platform.host import host_info
from farm.results.store import Store, default_db
from farm.run.engine import run
from farm.run.runner import RunOptions
from farm.transports.local import ISA_FEATURES
from farm.transports.ssh import _remote_path, canonical_arch
from farm.transports.sshlink import Endpoint, connect
from farm.transports.sshpush import PushStats, push
from tests.sshd import Sshd, devices_yaml, free_port, keygen, known_hosts_line, processes_with

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("farm")  # shared: the compile cache is reused across tests


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "board"  # the board's `workdir`: must be empty again after every test
    root.mkdir()
    return root


def assert_clean(board: Path, sshd: Sshd) -> None:
    """Nothing left on the board (server processes, work directory) nor here (tunnel child)."""
    assert processes_with(f"FARM_SSH_RUN={board}") == []
    assert list(board.iterdir()) == []
    assert processes_with(f'"port": {sshd.port}', "cmdline") == []


def results(data_dir: Path) -> dict[str, dict]:
    store = Store(default_db(data_dir))
    try:
        return {r.check: r.__dict__ for r in store.results(store.run(None)["id"])}
    finally:
        store.close()


def cli(*argv: str) -> int:
    return main(list(argv))


# --- end to end -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["tunnel", "direct"])
def test_smoke_runs_on_the_board(mode, sshd, board, data_dir, tmp_path):
    yaml = devices_yaml(tmp_path / "devices.yaml", sshd, board, tracker=mode)  # direct: default server_host
    rc = cli("run", "--suite", "smoke", "--device", "board", "--devices", str(yaml),
             "--data-dir", str(data_dir))
    got = results(data_dir)
    assert rc == 0, got
    assert {c: r["status"] for c, r in got.items()} == \
        {"compile": "pass", "correctness": "pass", "latency": "pass", "latency-fp32": "pass"}
    assert got["correctness"]["transport"].startswith("ssh root@127.0.0.1")
    assert got["latency"]["metrics"]["median"] > 0
    assert_clean(board, sshd)


def test_direct_server_listens_where_the_farm_reaches_the_board(tmp_path):
    """TVM's RPC server has no authentication: in direct mode it binds the board address farm
    connects to unless server_host asks for more (0.0.0.0 only when written)."""
    from farm.config.devices import load_devices
    from farm.transports import make_transport
    from farm.transports.base import FarmContext

    def server_host(extra: str) -> str:
        path = tmp_path / "d.yaml"
        path.write_text("devices:\n  - name: b\n    target: {family: x86, mcpu: haswell}\n"
                        f"    transport: {{kind: ssh, host: 192.0.2.7, tracker: direct{extra}}}\n")
        t = make_transport(load_devices(path).devices[0], FarmContext(tmp_path, tmp_path))
        args = t._server_args(("127.0.0.1", 9190), "192.0.2.1:9190")
        return args[args.index("--host") + 1], args[args.index("--custom-addr") + 1]

    assert server_host("") == ("192.0.2.7", "192.0.2.7")
    assert server_host(", server_host: 0.0.0.0") == ("0.0.0.0", "192.0.2.7")


def test_check_shows_each_step(sshd, board, data_dir, tmp_path, capsys):
    yaml = devices_yaml(tmp_path / "devices.yaml", sshd, board)
    assert cli("devices", "check", "board", "--devices", str(yaml), "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    for step in ("connect:", "probe: x86_64", "target:", "python:", "work directory:", "server: pid",
                 "registered:", "stop:"):
        assert f"ok   {step}" in out
    assert "FAIL" not in out
    assert_clean(board, sshd)


def test_leftovers_of_earlier_runs_are_swept(sshd, board, data_dir, tmp_path, capsys):
    """An unguarded server (its guard was killed with -9, or an older farm's) is killed and its
    directory removed; a guarded one is another run's and stays; so does a directory made a
    moment ago (another farm, before its guard starts)."""
    hours_ago = time.time() - 2 * 3600
    for name in ("run-old", "run-orphan", "run-guarded", "run-new"):
        (board / name).mkdir()
        (board / name / "server.log").write_text("x")
    for name in ("run-old", "run-guarded"):
        os.utime(board / name, (hours_ago, hours_ago))
    orphan = subprocess.Popen(["sleep", "120"], env={**os.environ, "FARM_SSH_RUN": str(board / "run-orphan")})
    guard = subprocess.Popen(["sleep", "120"], env={**os.environ, "FARM_SSH_GUARD": str(board / "run-guarded")})
    try:
        yaml = devices_yaml(tmp_path / "devices.yaml", sshd, board)
        assert cli("devices", "check", "board", "--devices", str(yaml), "--data-dir", str(data_dir)) == 0
        assert orphan.wait(10) == -9
    finally:
        for p in (orphan, guard):
            p.kill()
            p.wait()
    assert "killed 1 servers an earlier run left; removed 2 stale run directories" in capsys.readouterr().out
    assert sorted(p.name for p in board.iterdir()) == ["run-guarded", "run-new"]
    for name in ("run-guarded", "run-new"):
        shutil.rmtree(board / name)
    assert_clean(board, sshd)


def test_server_dying_mid_run_is_a_recorded_error(sshd, board, data_dir, tmp_path):
    yaml = devices_yaml(tmp_path / "devices.yaml", sshd, board)
    device = replace(load_devices(yaml).get("board"), retries=0)  # the retry path: test_faults.py
    suite = load_suite(find_suite("smoke", REPO / "suites"))
    killed = []

    def progress(msg: str) -> None:
        if "correctness: pass" in msg:  # the server is serving our session: kill it all
            for pid in processes_with(f"FARM_SSH_RUN={board}"):
                subprocess.run(["kill", "-9", str(pid)], check=False)
                killed.append(pid)

    outcome = run([(suite, [device])], RunOptions(data_dir=data_dir, progress=progress))
    by_check = {r.check: r for r in outcome.results}
    assert killed
    assert by_check["correctness"].status == "pass"
    assert by_check["latency"].status == "error" and by_check["latency"].kind == "device"
    assert not outcome.ok
    assert_clean(board, sshd)


# --- refusals: one FAIL line, exit 2, nothing left behind -----------------------------------------
def check_fails(yaml: Path, data_dir: Path, capsys) -> str:
    rc = cli("devices", "check", "board", "--devices", str(yaml), "--data-dir", str(data_dir))
    out = capsys.readouterr().out
    fails = [ln.strip() for ln in out.splitlines() if "FAIL" in ln]
    assert rc == 2 and len(fails) == 1, out
    return fails[0]


def test_unknown_host_key_is_refused(sshd, board, data_dir, tmp_path, capsys):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, known_hosts=str(empty)),
                       data_dir, capsys)
    assert f"[127.0.0.1]:{sshd.port}" in line and "is not in" in line and "ssh-keyscan" in line
    assert_clean(board, sshd)


def test_changed_host_key_is_refused(sshd, board, data_dir, tmp_path, capsys):
    other = keygen(tmp_path / "other_host")
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts_line(sshd.host, sshd.port, Path(f"{other}.pub")))
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, known_hosts=str(kh)),
                       data_dir, capsys)
    assert "CHANGED" in line and "ssh-keygen -R" in line
    assert_clean(board, sshd)


def test_wrong_user_key_is_refused(sshd, board, data_dir, tmp_path, capsys):
    stranger = keygen(tmp_path / "stranger")
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, identity=str(stranger)),
                       data_dir, capsys)
    assert "refused key" in line and "authorized_keys" in line
    assert_clean(board, sshd)


def test_missing_identity_file(sshd, board, data_dir, tmp_path, capsys):
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board,
                                    identity=str(tmp_path / "nope")), data_dir, capsys)
    assert "identity file" in line and "does not exist" in line


def test_closed_port_is_unreachable(sshd, board, data_dir, tmp_path, capsys):
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, port=free_port()),
                       data_dir, capsys)
    assert "cannot reach 127.0.0.1" in line and "refused" in line.lower()


def test_silent_host_times_out(sshd, board, data_dir, tmp_path, capsys):
    with socket.socket() as silent:  # accepts TCP, never says a word of SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        yaml = devices_yaml(tmp_path / "d.yaml", sshd, board, port=silent.getsockname()[1],
                            connect_timeout=1)
        line = check_fails(yaml, data_dir, capsys)
    assert "(timeout)" in line and "within 1 s" in line


def test_target_of_another_architecture_is_refused(sshd, board, data_dir, tmp_path, capsys):
    arm = "{family: arm, mtriple: aarch64-linux-gnu, mattr: [+neon]}"
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, target=arm), data_dir, capsys)
    assert "the board is x86_64 but 'board' has a aarch64 target" in line
    assert_clean(board, sshd)


def test_target_feature_the_board_lacks_is_refused(sshd, board, data_dir, tmp_path, capsys):
    lacking = next((f for f in ("amx_int8", "avx512_fp16", "avx512_bf16")
                    if f not in host_info().features), None)
    if lacking is None:
        pytest.skip("this CPU has every feature the test could ask for")
    llvm = {v: k for k, v in ISA_FEATURES.items()}[lacking]
    target = f"{{family: x86, mattr: [+{llvm}]}}"
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, target=target), data_dir, capsys)
    assert f"lacks {lacking}" in line
    assert_clean(board, sshd)


def test_python_without_tvm_is_refused(sshd, board, data_dir, tmp_path, capsys):
    plain = "/usr/bin/python3"
    if not Path(plain).exists() or subprocess.run([plain, "-c", "import tvm"],
                                                   capture_output=True).returncode == 0:
        pytest.skip("needs a python without TVM")
    line = check_fails(devices_yaml(tmp_path / "d.yaml", sshd, board, python=plain),
                       data_dir, capsys)
    assert "cannot import tvm" in line and "No module named 'tvm'" in line
    assert_clean(board, sshd)


def test_direct_mode_needs_a_tracker_the_board_can_reach(sshd, board, data_dir, tmp_path, capsys):
    yaml = devices_yaml(tmp_path / "d.yaml", sshd, board, host="192.0.2.1", tracker="direct")
    line = check_fails(yaml, data_dir, capsys)  # refused before any connection is tried
    assert "its own loopback" in line and "tracker: tunnel" in line


def test_server_that_never_registers_times_out(sshd, board, data_dir, tmp_path, capsys):
    yaml = devices_yaml(tmp_path / "d.yaml", sshd, board, tracker="direct", server_host="127.0.0.1",
                        tracker_host="127.0.0.1", tracker_port=free_port(), start_timeout=15)
    line = check_fails(yaml, data_dir, capsys)  # the server keeps knocking at a closed port
    assert "(timeout)" in line and "no server registered under key 'board' within 15 s" in line
    assert_clean(board, sshd)  # the waiting server was killed


def test_refused_board_in_a_run_is_recorded(sshd, board, data_dir, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    yaml = devices_yaml(tmp_path / "d.yaml", sshd, board, known_hosts=str(empty))
    rc = cli("run", "--suite", "smoke", "--device", "board", "--devices", str(yaml),
             "--data-dir", str(data_dir))
    got = results(data_dir)
    assert rc == 1
    assert got["compile"]["status"] == "pass"
    for check in ("correctness", "latency"):
        assert got[check]["status"] == "error" and got[check]["kind"] == "config"
        assert "is not in" in got[check]["reason"]
        assert "(after 1 attempts;" in got[check]["reason"]  # a refusal is not retried
    assert_clean(board, sshd)


# --- configuration and helpers --------------------------------------------------------------------
@pytest.mark.parametrize("extra, error", [("password: hunter2", "passwords are never stored"),
                                          ("runtime: push", "needs `push_from:`"),
                                          ("keepalive: 0", "'keepalive'"),
                                          ("keepalive_count: 1.5", "'keepalive_count'")])
def test_bad_ssh_options_are_rejected(tmp_path, extra, error):
    yaml = tmp_path / "d.yaml"
    yaml.write_text("devices:\n  - name: b\n    target: {family: x86}\n"
                    f"    transport: {{kind: ssh, host: h, {extra}}}\n")
    with pytest.raises(ConfigError, match=f"d.yaml:4: .*{error}"):
        load_devices(yaml)


def test_push_sends_only_changed_files(sshd, board, data_dir, tmp_path, capsys):
    local = tmp_path / "runtime"
    (local / "data").mkdir(parents=True)
    # python imports sitecustomize from PYTHONPATH at start-up: it logs which processes used it
    (local / "sitecustomize.py").write_text(
        "import os\n"
        "with open(os.path.join(os.path.dirname(__file__), '..', 'pythons.log'), 'a') as f:\n"
        "    f.write(os.environ.get('FARM_SSH_RUN', 'probe') + '\\n')\n")
    (local / "data" / "blob.bin").write_bytes(os.urandom(200_000))
    (local / "gone.txt").write_text("old")
    yaml = devices_yaml(tmp_path / "devices.yaml", sshd, board, runtime="push", push_from=str(local))

    assert cli("devices", "check", "board", "--devices", str(yaml), "--data-dir", str(data_dir)) == 0
    assert "push: 3 of 3 files changed and sent" in capsys.readouterr().out
    pushed = board / "runtime"
    assert (pushed / "data" / "blob.bin").read_bytes() == (local / "data" / "blob.bin").read_bytes()
    servers = {ln for ln in (board / "pythons.log").read_text().split() if ln != "probe"}
    assert len(servers) == 1 and next(iter(servers)).startswith(f"{board}/run-")  # ran with it

    client = connect(Endpoint(sshd.host, sshd.port, "root", str(sshd.user_key),
                              str(sshd.known_hosts), 5.0))
    try:
        (local / "gone.txt").unlink()
        (local / "data" / "blob.bin").write_bytes(os.urandom(1000))
        assert push(client, local, str(pushed), 10.0) == PushStats(1, 1, 2, 1000)
        assert not (pushed / "gone.txt").exists()
        (pushed / "data" / "blob.bin").write_bytes(b"edited on the board")
        assert push(client, local, str(pushed), 10.0).sent == 1
        assert (pushed / "data" / "blob.bin").read_bytes() == (local / "data" / "blob.bin").read_bytes()
        assert push(client, local, str(pushed), 10.0) == PushStats(0, 0, 2, 0)
    finally:
        client.close()
    shutil.rmtree(pushed)
    (board / "pythons.log").unlink()
    assert_clean(board, sshd)



def test_arch_names_and_remote_paths():
    assert [canonical_arch(a) for a in ("x86_64", "amd64", "aarch64", "arm64", "armv7l", "i686")] \
        == ["x86_64", "x86_64", "aarch64", "aarch64", "arm", "i386"]
    assert _remote_path("~/farm dir") == "\"$HOME\"/'farm dir'"
    assert _remote_path("/tmp/a;rm -rf /") == "'/tmp/a;rm -rf /'"


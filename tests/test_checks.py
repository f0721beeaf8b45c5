"""`farm devices check NAME` for a transport without its own check: brought up and down once."""

from __future__ import annotations

from pathlib import Path

from farm.cli import main


def test_local_device_is_started_and_stopped(tmp_path: Path, capsys):
    yaml = tmp_path / "devices.yaml"
    yaml.write_text("devices:\n  - name: here\n    target: {family: x86}\n    transport: {kind: local}\n"
                    "  - name: elsewhere\n    target: {family: x86}\n"
                    f"    transport: {{kind: ssh, host: h, identity: {tmp_path / 'no-key'}}}\n")
    rc = main(["devices", "check", "here", "elsewhere", "--devices", str(yaml),
               "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 2, out
    here, elsewhere = out.split("\nhere:\n")[1].split("\nelsewhere:\n")
    assert here.strip() == "ok   started and stopped"
    assert elsewhere.strip().startswith("FAIL available: identity file")


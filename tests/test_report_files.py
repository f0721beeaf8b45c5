"""farm report --format html / junit on a history written into a real store; the HTML page is
rendered by a real headless chromium."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from farm.cli import main
from farm.results.store import CheckResult
from tests.history_helpers import compile_result, correctness, latency, lowering, samples, write_run

LOWERING = lowering([("conv1", "conv2d", None), ("dense", "matmul", None)])


@pytest.fixture
def history(tmp_path):
    """Three nights: the last one is 10% slower on host, breaks vnni, and `dense` falls back."""
    db = tmp_path / "results.db"
    rng = np.random.default_rng(1)
    for night in range(3):
        last = night == 2
        low = lowering([("conv1", "conv2d", None), ("dense", "matmul", "<two activations>" if last else None)])
        vnni = correctness("x86-avx512-vnni", "fail", 0.5, 7, "max diff 7 LSB > 1") if last else \
            correctness("x86-avx512-vnni")
        skipped = CheckResult("arm64-qemu", "smoke", "latency", "skipped", kind="unavailable",
                              reason="transport 'qemu' is not available", emulated=True)
        write_run(db, f"2025010{night + 1}-020000-000{night}", [
            compile_result("host", low), correctness("host"),
            latency("host", samples(rng, 2e-3 * (1.1 if last else 1.0))),
            compile_result("x86-avx512-vnni"), vnni,
            latency("x86-avx512-vnni", samples(rng, 1.3e-3)), skipped,
        ], started=1.7e9 + night * 86400, commit=f"c{night}")
    log = tmp_path / "logs" / "20250103-020000-0002" / "x86-avx512-vnni" / "server-x86-avx512-vnni.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"server line {i}\n" for i in range(40)) + "RPCError: <boom>\n")
    return tmp_path


def test_html_report_tells_what_got_slower_broke_and_fell_back(history, capsys):
    out = history / "report.html"
    assert main(["report", "--format", "html", "-o", str(out), "--baseline", "previous",
                 "--data-dir", str(history)]) == 0
    page = out.read_text()
    assert "3 regressions since 20250102-020000-0001" in page
    for section in ("<h3>slower</h3>", "<h3>broke</h3>", "<h3>fell back from int8</h3>",
                    "lowering on host (1 fallback)", "smoke latency: last 30 runs"):
        assert section in page
    assert "dense (matmul) fell back from int8 (&lt;two activations&gt;)" in page  # escaped
    assert page.count('src="data:image/png;base64,') == 2  # distribution + trend
    assert "RPCError: &lt;boom&gt;" in page and "server line 30" in page and "server line 20" not in page
    assert "transport &#x27;qemu&#x27; is not available" in page


def test_html_report_without_baseline_or_latency(tmp_path):
    write_run(tmp_path / "results.db", "r1", [correctness("host")])
    out = tmp_path / "r.html"
    assert main(["report", "r1", "--format", "html", "-o", str(out), "--data-dir", str(tmp_path)]) == 0
    page = out.read_text()
    assert "regression" not in page and "data:image/png" not in page and "<td>host</td>" in page


def test_junit_xml_carries_reasons(history):
    out = history / "junit.xml"
    assert main(["report", "--format", "junit", "-o", str(out), "--data-dir", str(history)]) == 0
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("skipped")) == \
        ("smoke", "7", "1", "1")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    failure = cases[("farm.smoke.x86-avx512-vnni", "correctness")].find("failure")
    assert failure.get("message") == "wrong-answer: max diff 7 LSB > 1"
    skipped = cases[("farm.smoke.arm64-qemu", "latency")].find("skipped")
    assert skipped.get("message") == "unavailable: transport 'qemu' is not available"
    assert cases[("farm.smoke.host", "latency")].find("failure") is None


def test_report_of_a_missing_run_is_a_one_line_error(history, capsys):
    assert main(["report", "zzz", "--format", "html", "--data-dir", str(history)]) == 2
    assert capsys.readouterr().err.startswith("farm: no run or git commit 'zzz'")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                                              "scripts/bootstrap.sh installs it)")
def test_html_report_renders_in_headless_chromium(history, tmp_path):
    from matplotlib.image import imread

    page, png = history / "report.html", tmp_path / "shot.png"
    assert main(["report", "--format", "html", "-o", str(page), "--baseline", "previous",
                 "--data-dir", str(history)]) == 0
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.exists(), proc.stderr[-2000:]
    pixels = imread(png)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    # the embedded plots were decoded and drawn: the head runs' box colour (#4a7fd0) is on screen
    box = np.all(np.abs(pixels - np.array([0x4a, 0x7f, 0xd0]) / 255) < 0.02, axis=-1)
    assert box.sum() > 500
    # and the regression box (#fff4f4 background) is there too
    assert np.all(np.abs(pixels - np.array([0xff, 0xf4, 0xf4]) / 255) < 0.01, axis=-1).sum() > 10000


def test_a_model_that_does_not_run_in_int8_says_so():
    """"pass" with 0/5 ops int8 must not read like an int8 result: the row's notes say it."""
    from farm.report.table import HEADERS, device_rows
    from farm.results.store import CheckResult

    def row(int8_ops: int, computes: dict | None = None) -> dict:
        summary = {"ops": 5, "int8_ops": int8_ops, "float_ops": 0, "instructions": [], "kernels_with": {},
                   "dot_kernels": 5, "computes": computes or {"int8": int8_ops, "float32": 5 - int8_ops}}
        comp = CheckResult("host", "s", "compile", "pass", metrics={"lowering": {"summary": summary}})
        corr = CheckResult("host", "s", "correctness", "pass", metrics={"exact": 1.0})
        return dict(zip(HEADERS, device_rows([comp, corr])["s"][0], strict=True))

    assert "NOT INT8: no dot-product op runs in integers" in row(0)["notes"]
    # int16 operands are integers, not float: the note says which
    assert "NOT INT8: no dot-product op runs in int8 (4 in int16" in row(0, {"int16": 4, "float32": 1})["notes"]
    assert "2 of 5 dot-product ops not int8" in row(3)["notes"]
    assert "int8" not in row(5)["notes"]


def test_a_constant_reference_and_positional_top1_are_shown():
    from farm.report.table import HEADERS, device_rows
    from farm.results.store import CheckResult

    corr = CheckResult("host", "s", "correctness", "pass",
                       metrics={"exact": 1.0, "top1": 1.0, "top1_positions": 40, "constant_outputs": [0]})
    row = dict(zip(HEADERS, device_rows([corr])["s"][0], strict=True))
    assert "CONSTANT REFERENCE: output 0" in row["notes"] and row["top-1"] == "100% of 40"


def test_qoperator_figures_against_the_original_model_are_shown():
    from farm.report.table import HEADERS, device_rows
    from farm.results.store import CheckResult

    original = {"device": {"max_lsb": 21.0, "exact": 0.9}, "rewrite": {"max_lsb": 0.0, "exact": 1.0},
                "ort_kernels_vs_semantics": {"max_lsb": 21.0, "exact": 0.9}}
    corr = CheckResult("host", "s", "correctness", "pass", metrics={"exact": 1.0, "ort_original": original})
    notes = dict(zip(HEADERS, device_rows([corr])["s"][0], strict=True))["notes"]
    assert ("vs ORT on the original QOperator model: max 21 LSB (ORT's QLinear kernels vs the QDQ semantics: "
            "max 21 LSB; farm's rewrite vs ORT: equal)") in notes

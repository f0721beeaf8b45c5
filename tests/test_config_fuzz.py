"""Property: any malformed devices.yaml or suite file gives a ConfigError, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from farm.config.devices import Registry, load_devices
from farm.config.suites import Suite, load_suite
from farm.errors import ConfigError

KEYS = ["devices", "name", "target", "family", "mcpu", "mtriple", "mattr", "tag", "transport", "kind",
        "host", "port", "threads", "tags", "requires", "emulated", "key", "retries", "retry_backoff",
        "timeouts", "open", "run", "cpu", "user", "identity", "password", "model", "builtin", "path",
        "inputs", "seed", "count", "shape", "dtype", "low", "high", "correctness", "max_lsb",
        "min_exact", "latency", "repeat", "number", "warmup", "enabled", "local", "x86", "arm",
        "hexagon", "tracker", "qemu", "ssh", "hexagon-sim", "tinyconv", "float32"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(KEYS),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5)),
    max_leaves=25)
documents = st.one_of(
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(yaml.safe_dump),
    st.text(max_size=200),  # arbitrary text: YAML syntax errors, tabs, odd characters
)
DIR = Path(tempfile.mkdtemp(prefix="farm-fuzz-"))
REPO = Path(__file__).resolve().parent.parent
SHIPPED_DEVICES = (REPO / "devices.yaml").read_text()  # accepted: the validity checks do run
SHIPPED_SUITE = (REPO / "suites" / "smoke.yaml").read_text()


def _load(loader, text: str):
    path = DIR / "config.yaml"
    path.write_text(text)
    try:
        return loader(path)
    except ConfigError as e:
        msg = e.format()
        assert msg.startswith(str(path)) and "\n" not in msg.strip(), msg
        # a real line; YAML breaks lines at \r too (and \x85, \u2028, \u2029), as splitlines does
        assert e.line is None or 1 <= e.line <= len(text.splitlines()) + 1, (e.line, msg)
        return None


def _valid_registry(reg: Registry) -> None:
    """What every accepted devices.yaml guarantees the rest of farm."""
    names = [d.name for d in reg.devices]
    assert len(set(names)) == len(names) and all(names)
    for d in reg.devices:
        assert d.target.family in ("x86", "arm", "hexagon")
        assert d.transport.kind in ("local", "tracker", "qemu", "ssh", "hexagon-sim")
        assert type(d.threads) is int and d.threads >= 1 and type(d.retries) is int and d.retries >= 0
        assert d.key and d.line >= 1 and d.file


def _valid_suite(suite: Suite) -> None:
    lat = suite.latency
    assert suite.name and (suite.model.builtin is None) != (suite.model.path is None)
    assert lat.repeat >= 1 and lat.number >= 1 and lat.warmup >= 0
    assert 0 <= suite.correctness.min_exact <= 1


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
@example(SHIPPED_DEVICES)
def test_devices_yaml_never_tracebacks(text):
    result = _load(load_devices, text)
    assert result is not None or text != SHIPPED_DEVICES
    if result is not None:
        _valid_registry(result)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
@example(SHIPPED_SUITE)
@example("\r0")  # a YAML line break that is not \n: the error is on line 2
def test_suite_never_tracebacks(text):
    result = _load(load_suite, text)
    assert result is not None or text != SHIPPED_SUITE
    if result is not None:
        _valid_suite(result)

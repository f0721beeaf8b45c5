"""Property: any malformed devices.yaml or suite file gives a ConfigError, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
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


def _load(loader, text: str):
    path = DIR / "config.yaml"
    path.write_text(text)
    try:
        return loader(path)
    except ConfigError as e:
        msg = e.format()
        assert msg.startswith(str(path)) and "\n" not in msg.strip(), msg
        return None


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_devices_yaml_never_tracebacks(text):
    result = _load(load_devices, text)
    assert result is None or isinstance(result, Registry)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_suite_never_tracebacks(text):
    result = _load(load_suite, text)
    assert result is None or isinstance(result, Suite)

"""platform.isolate: a call that crashes its process becomes an error with the cause."""

from __future__ import annotations

import signal

import pytest

from farm.errors import FarmError
from farm.platform.isolate import Crashed, run_isolated
from tests import crashers


def test_values_and_farm_errors_come_back_whole(tmp_path):
    log = tmp_path / "call.log"
    assert run_isolated(crashers.double, 21, what="doubling", log=log) == 42
    with pytest.raises(FarmError) as e:
        run_isolated(crashers.refuse, what="refusing", log=log)
    assert e.value.format() == "m.yaml:3: the model is odd — fix it"


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGSEGV])
def test_a_crash_names_its_signal(tmp_path, sig):
    with pytest.raises(Crashed) as e:
        run_isolated(crashers.die, sig, what="the kernel", log=tmp_path / "call.log")
    assert e.value.cause == sig.name and f"the kernel crashed ({sig.name})" in e.value.format()


def test_a_hang_is_stopped_at_its_timeout(tmp_path):
    with pytest.raises(Crashed) as e:
        run_isolated(crashers.hang, what="the kernel", log=tmp_path / "call.log", timeout=1.0)
    assert e.value.cause == "timeout" and "took longer than 1 s" in e.value.format()


def test_litert_reference_kernels_that_abort_fall_back_to_the_optimized_ones(tmp_path):
    """The reference kernels abort (as LiteRT's do on a real MobileNetV2): the farm lives on and
    checks against the optimized kernels, saying so; with working kernels both are kept."""
    from farm.config.suites import InputSpec
    from farm.models.registry import build_builtin
    from farm.models.tflite import litert_reference

    model = build_builtin("tflite-tiny", tmp_path / "models").path
    fallback = litert_reference(model, InputSpec(count=2), tmp_path / "litert.log", run=crashers.litert_ref_aborts)
    assert fallback.note and "SIGABRT" in fallback.note and fallback.optimized is None
    normal = litert_reference(model, InputSpec(count=2), tmp_path / "litert.log")
    assert normal.note is None and normal.optimized is not None
    for got, want in zip(fallback.refs, normal.optimized, strict=True):
        assert all((a == b).all() for a, b in zip(got, want, strict=True))

"""Correctness metrics and latency statistics on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from farm.config.suites import CorrectnessSpec
from farm.run.metrics import LatencyStats, compare, judge


def test_identical_outputs():
    ref = [[np.arange(10, dtype=np.float32).reshape(1, 10) * 0.5]]
    m = compare(ref, ref, [0.5])
    assert m["max_lsb"] == 0 and m["exact"] == 1.0 and m["top1"] == 1.0
    assert m["cosine"] == pytest.approx(1.0)
    assert judge(m, CorrectnessSpec()) == []


def test_lsb_counting_and_exact_share():
    step = 0.25
    ref = np.arange(8, dtype=np.float32).reshape(2, 4) * step
    out = ref.copy()
    out[0, 1] += step  # one level off
    out[1, 2] -= 3 * step  # three levels off
    m = compare([[out]], [[ref]], [step])
    assert m["max_lsb"] == 3 and m["exact"] == pytest.approx(6 / 8)
    assert m["max_abs"] == pytest.approx(0.75)
    bad = judge(m, CorrectnessSpec(max_lsb=1, min_exact=0.9, min_cosine=0.0, min_top1=0.0))
    assert any("max diff 3 LSB" in b for b in bad) and any("exact 75.00%" in b for b in bad)


def test_top1_disagreement():
    ref = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    out = np.array([[0.0, 0.4, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    m = compare([[out]], [[ref]], [None])
    assert m["top1"] == 0.5 and m["max_lsb"] is None
    assert any("top-1" in b for b in judge(m, CorrectnessSpec(min_exact=0, min_cosine=0)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare([[np.zeros((1, 3))]], [[np.zeros((1, 4))]], [None])


def test_float_outputs_use_relative_closeness():
    ref = np.linspace(-5, 5, 100).astype(np.float32)[None]
    out = ref * (1 + 1e-7)
    assert compare([[out]], [[ref]], [None])["exact"] == 1.0
    assert compare([[ref + 0.1]], [[ref]], [None])["exact"] < 0.05


def test_latency_stats():
    s = LatencyStats.of([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 10.0)
    assert s.mean == 4.0 and s.p90 == pytest.approx(7.6)
    assert s.cov == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1) / 4.0)
    with pytest.raises(ValueError):
        LatencyStats.of([])

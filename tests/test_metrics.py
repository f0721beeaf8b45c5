"""Correctness metrics and latency statistics on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from farm.config.suites import CorrectnessSpec
from farm.run.metrics import LatencyStats, compare, judge, noise_floor, vs_original


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


def test_top1_is_per_position_on_sequence_outputs():
    """[N, T, C] (an OCR recognizer's per-step classes): one arg-max per time step, so one step
    disagreeing costs 1/T — not the whole input, as one arg-max over T·C would."""
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 200, (1, 40, 30)).astype(np.float32)
    out = ref.copy()
    out[0, 3] = 0
    out[0, 3, (ref[0, 3].argmax() + 1) % 30] = 255  # step 3 now picks another, lower class
    m = compare([[out]], [[ref]], [1.0])
    assert m["top1_positions"] == 40 and m["top1"] == pytest.approx(39 / 40)


def test_top1_ties_within_one_step_agree():
    ref = np.array([[10.0, 12.0, 11.0]], dtype=np.float32)
    out = np.array([[10.0, 11.0, 12.0]], dtype=np.float32)  # picks the class one level below the best
    assert compare([[out]], [[ref]], [1.0])["top1"] == 1.0
    assert compare([[out]], [[ref]], [None])["top1"] == 0.0  # float output: no grid, no tie


def test_maps_have_no_top1():
    ref = np.random.default_rng(0).random((1, 4, 8, 8)).astype(np.float32)
    m = compare([[ref]], [[ref]], [None])
    assert m["top1"] is None and m["top1_positions"] == 0


def test_a_constant_reference_is_named():
    zeros = [[np.zeros((1, 16), np.float32), np.arange(4, dtype=np.float32)[None]] for _ in range(2)]
    m = compare(zeros, zeros, [0.1, 0.1])
    assert m["constant_outputs"] == [0]
    varying = [[np.full((1, 16), k, np.float32)] for k in range(2)]  # constant in each set, not across
    assert compare(varying, varying, [0.1])["constant_outputs"] == []


def test_cosine_is_not_judged_on_a_quantized_grid():
    """A sparse quantized output one level off in a few places: within max_lsb and min_exact,
    though its cosine is far below 0.999."""
    ref = np.zeros((1, 1000), np.float32)
    out = ref.copy()
    out[0, :3] = 0.01
    m = compare([[out]], [[ref]], [0.01])
    assert m["cosine"] < 0.5 and judge(m, CorrectnessSpec()) == []
    assert judge(compare([[out]], [[ref]], [None]), CorrectnessSpec(min_exact=0))  # float: judged


def test_vs_original_fails_a_rewrite_that_ort_does_not_reproduce():
    step = 0.5
    ref = [[np.arange(8, dtype=np.float32) * step]]  # the QDQ semantics
    original = [[ref[0][0] + np.float32(step) * (np.arange(8) % 2)]]  # ORT's kernels: 1 LSB off on half
    device = [[ref[0][0].copy()]]
    spec = CorrectnessSpec(max_lsb=1)
    figures, bad = vs_original(device, original, [[original[0][0].copy()]], ref, [step], spec)
    assert bad == []
    assert figures["rewrite"] == {"max_lsb": 0.0, "exact": 1.0}
    assert figures["device"]["max_lsb"] == 1.0 and figures["device"]["exact"] == 0.5
    assert figures["ort_kernels_vs_semantics"] == figures["device"]
    wrong_form = [[original[0][0] + np.float32(3 * step)]]
    _, bad = vs_original(device, original, wrong_form, ref, [step], spec)
    assert len(bad) == 1 and "max diff 3 LSB > 1" in bad[0] and "farm's rewrite" in bad[0]


def _unstable(n: int, off_at: list[int], by: float) -> list[list[np.ndarray]]:
    """A [1, n] output on a grid of step 1, `by` levels off the exact semantics at `off_at`."""
    out = np.zeros((1, n), np.float32)
    out[0, off_at] = by
    return [[out]]


def test_an_unstable_model_is_judged_against_the_noise_floor():
    """Where ONNX Runtime is itself far off the exact semantics (near-tie flips amplified), the
    device may be off as often as twice ORT, plus one — not more; the reason names the floor."""
    spec = CorrectnessSpec(max_lsb=1, min_exact=0.9)
    exact = _unstable(1000, [], 0)
    floor = noise_floor(compare(_unstable(1000, [1, 2, 3, 4, 5], 200), exact, [1.0]), spec)
    assert floor == {"max_lsb": 200.0, "beyond": 5, "elements": 1000, "top1_missed": 0}
    at = compare(_unstable(1000, list(range(11)), 255), exact, [1.0])  # 11 = 2 × 5 + 1
    assert at["beyond"] == 11 and judge(at, spec, floor) == []
    assert judge(at, spec) == ["max diff 255 LSB > 1"]  # without the floor: the plain threshold
    over = compare(_unstable(1000, list(range(12)), 255), exact, [1.0])
    (reason,) = judge(over, spec, floor)
    assert "12 elements more than 1 LSB off the exact semantics > 11" in reason and "noise floor" in reason
    # the other thresholds still hold under the floor
    assert judge(compare(_unstable(100, list(range(11)), 255), _unstable(100, [], 0), [1.0]), spec, floor) == \
        ["exact 89.00% < 90.00%"]


def test_no_noise_floor_where_ort_meets_the_thresholds():
    spec = CorrectnessSpec(max_lsb=1)
    exact = _unstable(100, [], 0)
    assert noise_floor(compare(_unstable(100, [1, 2, 3], 1), exact, [1.0]), spec) is None  # 1 LSB: within


def test_top1_under_the_noise_floor_counts_moved_positions():
    """A sequence output whose top-1 ORT moves at one position (of 10): the device may move it at
    up to three (2 × 1 + 1), judged against the exact semantics."""
    spec = CorrectnessSpec(max_lsb=300)
    exact = np.zeros((1, 10, 4), np.float32)
    exact[0, :, 0] = 1.0

    def moved(k: int) -> list[list[np.ndarray]]:
        out = exact.copy()
        out[0, :k, 0], out[0, :k, 1] = 0.0, 1.0
        return [[out]]

    floor = noise_floor(compare(moved(1), [[exact]], [0.1], 300), spec)  # 10 levels: within max_lsb
    assert floor is not None and floor["top1_missed"] == 1 and floor["beyond"] == 0
    for k, passes in ((3, True), (4, False)):
        m = compare(moved(k), [[exact]], [0.1], 300)
        m["top1_missed_exact"] = m["top1_missed"]
        bad = judge(m, CorrectnessSpec(max_lsb=300, min_exact=0), floor)
        assert (bad == []) is passes, (k, bad)
    assert "top-1 differs from the exact semantics at 4 of 10 positions > 3" in bad[-1]

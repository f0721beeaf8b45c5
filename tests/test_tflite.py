"""TFLite models: TFLite's integer arithmetic checked against LiteRT, the integer lowering of
imported TFLite models checked bit for bit against LiteRT, and the farm end to end."""

from __future__ import annotations

import numpy as np
import pytest

from farm.cli import main
from farm.compile.int8 import tflite_arith as A
from farm.compile.int8.qparams import OutGrid
from farm.errors import FarmError
from farm.models.tflite import read_tflite, run_litert, tflite_inputs
from farm.models.tflite_builders import QGraph, _windows, mobilenet_v1, tflite_tiny
from farm.results.store import Store
from tests.conftest import HOST_ONLY, run_lib

SHAPE = (1, 9, 9, 16)


def _interpreter(model: bytes, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it


def _tensor(it, prefix: str, suffix: str = ""):
    """(values, scale, zero point, per-axis scales) of the last tensor named prefix…suffix (the
    builders name weights "<op>_<n>_w", biases "_b", outputs "<op>_<n>")."""
    d = [d for d in it.get_tensor_details() if d["name"].startswith(prefix) and d["name"].endswith(suffix)
         and (suffix or d["name"][-2:] not in ("_w", "_b"))][-1]
    return it.get_tensor(d["index"]), *d["quantization"], d["quantization_parameters"]["scales"]


def _single_op(kind: str, seed: int):
    g = QGraph("t", seed, SHAPE)
    x = g.input
    y = {"conv": lambda: g.conv(x, 24, 3, act="relu6"),
         "depthwise": lambda: g.conv(x, 16, 3, stride=2, act=None, depthwise=True),
         "fc": lambda: g.fully_connected(g.reshape(x, [1, int(np.prod(SHAPE))]), 20),
         "add": lambda: g.add(x, g.conv(x, 16, 1, act=None), act="relu"),
         "avgpool": lambda: g.avg_pool(x, 2, 2, padding="same"),
         "mean": lambda: g.mean(x)}[kind]()
    return g.serialize(y)


def _twin(kind: str, it, x: np.ndarray) -> np.ndarray:
    """What TFLite's integer arithmetic (tflite_arith's numpy twins) gives for the single op."""
    out = it.get_output_details()[0]
    so, zo = out["quantization"]
    _, sx, zx, _ = _tensor(it, "input")
    if kind in ("conv", "depthwise", "fc"):
        prefix = {"conv": "conv", "depthwise": "dwconv", "fc": "fc"}[kind]
        w, _, _, sw = _tensor(it, prefix, "_w")
        w = w.astype(np.int64)
        b = _tensor(it, prefix, "_b")[0]
        xz = x.astype(np.int64) - zx
        if kind == "conv":
            acc = np.einsum("nhwcij,oijc->nhwo", _windows(xz, 3, 1, "same"), w)
        elif kind == "depthwise":
            acc = np.einsum("nhwcij,ijc->nhwc", _windows(xz, 3, 2, "same"), w[0])
        else:
            acc = xz.reshape(1, -1) @ w.T
        lo = zo if kind == "conv" else -128  # conv: ReLU6's lower bound (6.0 is above the grid)
        m = np.float64(np.float32(sx)) * sw.astype(np.float64) / np.float64(np.float32(so))
        return A.requantize_np(acc + b, m, zo, lo, 127, single_rounding=kind == "fc")
    if kind == "add":
        c, sc, zc, _ = _tensor(it, "conv")
        return A.add_np(x, zx, sx, c, zc, sc, so, zo, max(zo, -128), 127)
    if kind == "avgpool":
        win = _windows(x.astype(np.float64), 2, 2, "same", np.nan)
        total = np.nansum(win, axis=(4, 5)).astype(np.int64)
        return A.rounded_div_np(total, np.sum(~np.isnan(win), axis=(4, 5)))
    return A.mean_np(x, zx, sx, [1, 2], so, zo).reshape(1, 1, 1, -1)


@pytest.mark.parametrize("kind", ["conv", "depthwise", "fc", "add", "avgpool", "mean"])
def test_tflite_arithmetic_matches_litert(kind):
    """The numpy twins of TFLite's fixed point agree with LiteRT's reference kernels exactly."""
    rng = np.random.default_rng(7)
    for seed in range(4):
        x = rng.integers(-128, 128, SHAPE).astype(np.int8)
        it = _interpreter(_single_op(kind, seed), x)
        out = it.get_tensor(it.get_output_details()[0]["index"])
        np.testing.assert_array_equal(_twin(kind, it, x).reshape(out.shape), out)


def test_fully_connected_rounds_once_and_conv_twice():
    """Measured, not assumed: over 1000 outputs, LiteRT's FULLY_CONNECTED agrees only with one
    rounding, its CONV_2D only with two."""
    x = np.random.default_rng(1).integers(-128, 128, (1, 1, 1, 64)).astype(np.int8)
    misses = {}
    for kind in ("fc", "conv"):
        g = QGraph("t", 2, (1, 1, 1, 64))
        y = g.fully_connected(g.reshape(g.input, [1, 64]), 1000) if kind == "fc" else g.conv(g.input, 1000, 1, act=None)
        it = _interpreter(g.serialize(y), x)
        out = it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1)
        w, _, _, sw = _tensor(it, kind, "_w")
        acc = (x.reshape(1, -1).astype(np.int64) - _tensor(it, "input")[2]) @ w.reshape(1000, -1).T.astype(np.int64) \
            + _tensor(it, kind, "_b")[0]
        so, zo = it.get_output_details()[0]["quantization"]
        m = np.float64(np.float32(_tensor(it, "input")[1])) * sw.astype(np.float64) / np.float64(np.float32(so))
        misses[kind] = [int((A.requantize_np(acc, m, zo, -128, 127, once).reshape(-1) != out).sum())
                        for once in (True, False)]
    assert misses["fc"][0] == 0 < misses["fc"][1] and misses["conv"][1] == 0 < misses["conv"][0], misses


def test_double_rounding_is_not_rounding_once():
    """TFLite's two roundings differ from one rounding of acc · M on some accumulators (which is
    why the ONNX requantize cannot be reused), and agree with it on most."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**20, 2**20, 200_000)
    m = np.float64(0.0003117)
    twin = A.requantize_np(acc, m, 0, -2**31, 2**31 - 1)
    once = np.floor(acc * m + 0.5)
    assert 0 < np.count_nonzero(twin != once) < acc.size // 100


def test_quantize_multiplier_is_tflites():
    fixed, e = A.quantize_multiplier(np.array([0.5, 0.75, 1.5, 2.0**-20]))
    assert fixed.tolist() == [2**30, 3 * 2**29, 3 * 2**29, 2**30] and e.tolist() == [0, 0, 1, -19]
    with pytest.raises(A.OutOfRange):
        A.quantize_multiplier(np.array([0.0]))


def test_relax_arithmetic_matches_its_twin():
    """requantize (multipliers below and above 1, per channel), add, mean and the average pool's
    rounded division emitted in Relax, compiled by TVM, equal their numpy twins."""
    import tvm
    from tvm import relax

    rng = np.random.default_rng(3)
    acc = rng.integers(-2**24, 2**24, (2, 40, 50, 6)).astype(np.int32)
    a8 = rng.integers(-128, 128, (2, 4, 5, 6)).astype(np.int8)
    b8 = rng.integers(-128, 128, (2, 4, 5, 6)).astype(np.int8)
    m = np.array([1e-6, 0.0013, 0.37, 0.5, 1.0, 3.1]).reshape(1, 1, 1, 6)  # exponents -19 … 2
    counts = rng.integers(1, 50, (1, 1, 4, 5))
    tot = (rng.integers(-128, 128, (2, 3, 4, 5)) * counts).astype(np.int32)
    tot[0, 0] = counts[0, 0] // 2 * np.where(counts[0, 0] % 2, 1, -1) * 3  # ties: ±1.5·n
    out = OutGrid(0.05, -7, -128, 127, "int8")
    bb = relax.BlockBuilder()
    xs = [relax.Var(n, relax.TensorType(v.shape, str(v.dtype)))
          for n, v in (("acc", acc), ("a", a8), ("b", b8), ("tot", tot))]
    with bb.function("main", xs):
        with bb.dataflow():
            r = bb.emit(A.requantize(bb, xs[0], m, 3, -2**31, 2**31 - 1, "int32"))
            r1 = bb.emit(A.requantize(bb, xs[0], m, 3, -2**31, 2**31 - 1, "int32", single_rounding=True))
            s = bb.emit(A.add(bb, xs[1], 5, 0.02, xs[2], -3, 0.07, out))
            t = bb.emit(A.mean(bb, xs[1], 5, 0.02, [1, 2], True, 20, out))
            d = A.rounded_div(bb, xs[3], counts, 128 * 49)
            res = bb.emit_output(relax.Tuple([r, s, t, d, r1]))
        bb.emit_func_output(res)
    ex = tvm.compile(bb.get(), "llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(v) for v in (acc, a8, b8, tot)])]
    np.testing.assert_array_equal(got[0], A.requantize_np(acc, m, 3, -2**31, 2**31 - 1))
    assert len(np.unique(got[0])) > 200 // 2  # not saturated: the roundings were exercised
    np.testing.assert_array_equal(got[1], A.add_np(a8, 5, 0.02, b8, -3, 0.07, 0.05, -7))
    np.testing.assert_array_equal(got[2], A.mean_np(a8, 5, 0.02, [1, 2], 0.05, -7).reshape(2, 1, 1, 6))
    np.testing.assert_array_equal(got[3], A.rounded_div_np(tot, counts))
    np.testing.assert_array_equal(got[4], A.requantize_np(acc, m, 3, -2**31, 2**31 - 1, single_rounding=True))


def _softmax_model(seed: int, classes: int) -> bytes:
    g = QGraph("t", seed, (1, 1, 1, 64))
    logits = g.fully_connected(g.reshape(g.input, [1, 64]), classes)
    return g.serialize(g.softmax(logits), logits)


@pytest.mark.parametrize("classes", [3, 10, 1001])
def test_softmax_twin_matches_litert(classes):
    """gemmlowp's fixed-point softmax (numpy) equals LiteRT's int8 softmax, peaked or flat."""
    from farm.compile.int8.tflite_softmax import softmax_np

    rng = np.random.default_rng(classes)
    peaks = []
    for seed in range(4):
        it = _interpreter(_softmax_model(seed, classes), rng.integers(-128, 128, (1, 1, 1, 64)).astype(np.int8))
        probs, logits = (it.get_tensor(d["index"]) for d in it.get_output_details())
        scale = it.get_output_details()[1]["quantization"][0]
        np.testing.assert_array_equal(softmax_np(logits, scale), probs)
        peaks.append(int(probs.max()))
    # The uniform row's level is 1/classes on the output grid (scale 1/256, zero point -128).
    # Few classes: some row is far above it (the peaked case was exercised, not only flat rows).
    # 1001 classes: the rows are near-flat, and some level must still stand above the floor
    # (a softmax that lost its mass to rounding would put every element at -128).
    uniform = -128 + round(256 / classes)
    assert max(peaks) >= uniform + (16 if classes <= 100 else 1), (peaks, uniform)


def test_relax_softmax_matches_its_twin():
    import tvm
    from tvm import relax

    from farm.compile.int8.tflite_softmax import softmax, softmax_np

    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (6, 40)).astype(np.int8)
    x[1] = -128  # a flat row
    x[2, :] = -128
    x[2, 7] = 127  # one spike
    for scale in (0.002, 0.03, 0.2):
        bb = relax.BlockBuilder()
        v = relax.Var("x", relax.TensorType(x.shape, "int8"))
        with bb.function("main", [v]):
            with bb.dataflow():
                out = bb.emit_output(softmax(bb, v, scale, 0, "int8"))
            bb.emit_func_output(out)
        vm = relax.VirtualMachine(tvm.compile(bb.get(), "llvm"), tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), softmax_np(x, scale))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(tflite_tiny())
    return path


def test_tiny_model_lowers_to_integers_and_matches_litert_bit_for_bit(tiny, registry, tmp_path):
    """Every conv / depthwise / dense / pool of the imported model computes in int8, and the
    softmax too (nothing stays float), NCHW for the schedules; the compiled model equals LiteRT."""
    from farm.compile.build import compile_model, lower_model
    from farm.compile.lowering_report import relax_dot_ops

    mod, reasons = lower_model(tiny)
    ops = relax_dot_ops(mod, reasons)
    assert sorted(o["op"] for o in ops) == ["avg_pool2d", "conv2d", "conv2d", "conv2d", "conv2d", "dense"]
    assert all(o["compute"] == "int8" for o in ops)
    assert reasons == {} and "softmax" not in mod.script(show_meta=False)
    assert 'layout="NHWC"' not in mod.script(show_meta=False)  # the schedules' NCHW convs
    art = compile_model(tiny, registry.get("host"), tmp_path)
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.integers(-128, 128, (1, 16, 16, 3)).astype(np.int8)} for _ in range(6)]
    for got, ref in zip(run_lib(art.lib, feeds), run_litert(tiny, feeds), strict=True):
        assert len(got) == len(ref) == 2
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(g, r)


def test_tflite_suite_end_to_end_on_host(write, shared_data, capsys, no_orphans):
    devices = write("devices.yaml", HOST_ONLY)
    argv = ["run", "--suite", "tflite-smoke", "--devices", str(devices), "--data-dir", str(shared_data)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vs LiteRT" in out
    store = Store(shared_data / "results.db")
    results = {r.check: r for r in store.results(store.run()["id"])}
    corr = results["correctness"].metrics
    assert corr["exact"] == 1.0 and corr["max_lsb"] == 0 and corr["reference"].startswith("LiteRT")
    assert corr["elements"] == 8 * (10 + 10)  # both outputs (probabilities, logits) over RPC
    assert results["latency-fp32"].status == "pass"
    assert results["compile"].metrics["lowering"]["summary"]["int8_ops"] == 5


def test_float_baseline_is_the_same_network(tiny, tmp_path):
    """The derived float32 model takes the same int8 input and computes what the int8 model
    approximates."""
    from farm.models.tflite_float import float_tflite

    f = tmp_path / "f.tflite"
    f.write_bytes(float_tflite(tiny))
    assert [i.dtype for i in tflite_inputs(f)] == ["int8"]
    x = [{"input": np.random.default_rng(1).integers(-128, 128, (1, 16, 16, 3)).astype(np.int8)}]
    q, fl = run_litert(tiny, x)[0][0], run_litert(f, x)[0][0]
    assert fl.dtype == np.float32 and np.abs((q.astype(np.float64) + 128) / 256 - fl).max() < 0.02


@pytest.mark.parametrize("content, what", [
    (b"", "not a TFLite model"),
    (b"\x00" * 16, "not a TFLite model"),
    ("truncated", "corrupt TFLite flatbuffer"),
])
def test_bad_tflite_is_one_line_error(content, what, tiny, tmp_path, write, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(tiny.read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(FarmError, match=what):
        read_tflite(bad)
    devices = write("devices.yaml", HOST_ONLY)
    assert main(["run", "--model", str(bad), "--devices", str(devices), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err[-1:]) == 1 and "bad.tflite" in err[-1] and what in err[-1] and "Traceback" not in err[-1]


def test_operator_tvm_cannot_import_is_one_line_error(tmp_path):
    from farm.compile.int8.tflite_lower import import_tflite
    from farm.models.tflite_writer import OP, FlatModel

    m = FlatModel()
    x, y = (m.tensor(n, [1, 8], "int8", 0.1, 3) for n in ("x", "y"))
    m.op(OP.SQUARE, [x], [y])  # TVM's TFLite frontend has no quantized SQUARE
    path = tmp_path / "square.tflite"
    path.write_bytes(m.serialize([x], [y]))
    with pytest.raises(FarmError, match=r"TVM cannot import square.tflite: .*SQUARE") as e:
        import_tflite(path)
    assert "\n" not in str(e.value)


def test_builtin_models_are_deterministic():
    assert tflite_tiny() == tflite_tiny()
    assert tflite_tiny(seed=1) != tflite_tiny()


@pytest.mark.slow
def test_mobilenet_matches_litert_on_host(registry, tmp_path):
    from farm.compile.build import compile_model

    path = tmp_path / "mobilenet.tflite"
    path.write_bytes(mobilenet_v1())
    art = compile_model(path, registry.get("host"), tmp_path)
    assert art.meta["lowering"]["summary"]["int8_ops"] == art.meta["lowering"]["summary"]["ops"]
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.integers(-128, 128, (1, 224, 224, 3)).astype(np.int8)} for _ in range(2)]
    for got, ref in zip(run_lib(art.lib, feeds), run_litert(path, feeds), strict=True):
        for g, r in zip(got, ref, strict=True):
            assert np.mean(g == r) >= 0.999


def test_inputs_and_outputs_are_read_without_an_interpreter(tiny, monkeypatch):
    """Preparing an interpreter runs LiteRT's kernels, which abort on some real models: what the
    farm process itself reads of a model comes from the flatbuffer, and agrees with LiteRT."""
    from farm.models import tflite

    it = tflite._interpreter(tiny)
    want_in = [(d["name"], tuple(d["shape"]), np.dtype(d["dtype"]).name) for d in it.get_input_details()]
    want_out = [np.issubdtype(d["dtype"], np.integer) for d in it.get_output_details()]

    def no_interpreter(*_a, **_k):
        raise AssertionError("a LiteRT interpreter was made in the farm process")

    monkeypatch.setattr(tflite, "_interpreter", no_interpreter)
    assert [(i.name, i.shape, i.dtype) for i in tflite.tflite_inputs(tiny)] == want_in
    assert [s == 1.0 for s in tflite.tflite_output_steps(tiny)] == want_out

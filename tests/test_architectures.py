"""The op classes of shipped detectors, OCR and transformer models (farm/models/architectures.py),
quantized by ONNX Runtime's quantizer in both formats: each imports, compiles for the host, keeps
every conv and weight MatMul in int8 and passes the default suite's correctness, judged as farm
judges it: against the float64 exact semantics where they cover the model, ONNX Runtime otherwise."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from farm.compile.build import compile_model
from farm.config.suites import CorrectnessSpec, InputSpec
from farm.models.exact_reference import exact_outputs, with_exact_semantics
from farm.models.original import original_model_run
from farm.models.reference import make_inputs, model_inputs, output_steps, reference_outputs
from farm.models.registry import build_builtin
from farm.run.metrics import compare, judge
from tests.conftest import run_lib

MODELS = {
    "tinydetector": ["Sigmoid", "Mul", "Split", "Concat", "MaxPool", "Resize"],
    "tinydetector-qoperator": ["QLinearSigmoid", "QLinearMul", "QLinearConcat", "Split", "Resize"],
    "tinydbnet": ["HardSwish", "HardSigmoid", "Resize", "ConvTranspose", "Concat"],
    "tinydbnet-qoperator": ["HardSwish", "HardSigmoid", "Resize", "ConvTranspose", "QLinearConcat"],
    "tinyattention": ["LayerNormalization", "Softmax", "Erf", "MatMul", "Transpose"],
    "tinyattention-qoperator": ["LayerNormalization", "QLinearSoftmax", "QLinearMatMul", "Erf"],
}

# what stays float, by reason: in QOperator form ORT's quantizer leaves ConvTranspose with a float weight
# and reads the squeeze-excite mean off a float tensor; nothing else may
FLOAT_LEFT = {
    "tinydbnet-qoperator": {"conv2d_transpose weight is not a dequantized constant",
                            "mean input is not a dequantized tensor"},
    "tinyattention": {"no integer form for nn.layer_norm", "no integer form for nn.softmax"},
    "tinyattention-qoperator": {"no integer form for nn.layer_norm", "no integer form for nn.softmax"},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_architecture_runs_in_int8_and_agrees_with_ort(name, registry, work):
    path = build_builtin(name, work / "models").path
    model = onnx.load(str(path))
    assert set(MODELS[name]) <= {n.op_type for n in model.graph.node}  # the classes it is about
    feeds = make_inputs(model_inputs(model), InputSpec(seed=5, count=3))
    refs, note = reference_outputs(path, feeds)
    assert note is None  # ONNX Runtime itself, not a stand-in
    art = compile_model(path, registry.get("host"), work / "cache")
    outs = run_lib(art.lib, feeds)
    assert np.ptp(outs[0][0]) > 0 and np.ptp(refs[0][0]) > 0  # not a constant agreeing with a constant
    ops = art.meta["lowering"]["ops"]
    assert set(art.meta["lowering"]["float_ops"].values()) == FLOAT_LEFT.get(name, set())
    classes = art.meta["lowering"]["summary"]["float_classes"]  # the table's "(2 softmax, …)"
    assert sum(classes.values()) == len(art.meta["lowering"]["float_ops"]), classes
    weights = [o for o in ops if o["op"] == "conv2d" or o["compute"] == "int8"]
    assert weights and all(o["compute"] == "int8" for o in weights if o["op"] == "conv2d"), ops
    # what stays out of int8 is named with a reason: here only the activation × activation matmuls
    assert all(o["op"] == "dense" and "two activation" in o["fallback"] for o in ops if o["compute"] != "int8"), ops
    if "qoperator" in name:  # farm's rewrite reproduces ORT on the original model
        run = original_model_run(model, path.name, feeds)
        assert all(np.array_equal(f[0], o[0]) for f, o in zip(run.form, run.original, strict=True))
    steps = output_steps(model)
    m = compare(outs, refs, steps)
    exact = exact_outputs(model, feeds)
    if exact is not None:
        m = with_exact_semantics(m, compare(outs, exact, steps))
    assert judge(m, CorrectnessSpec()) == [], m


@pytest.mark.parametrize("device", ["arm64-qemu", "hexagon-v68-sim"])
@pytest.mark.parametrize("name", ["tinydetector", "tinydbnet", "tinyattention"])
def test_architecture_passes_on_the_emulated_devices(name, device, tmp_path):
    """`farm run` on the default farm's emulated aarch64 board and Hexagon simulator: the op classes
    compile (the float islands too: the Hexagon executable brings its own sqrtf / expf) and pass."""
    from farm.cli import main
    from farm.results.store import Store

    path = build_builtin(name, tmp_path / "models").path
    data = tmp_path / "data"
    code = main(["run", "--model", str(path), "--device", device, "--data-dir", str(data)])
    with Store(data / "results.db") as store:
        checks = {r.check: r for r in store.results(store.run()["id"])}
    compile_ = checks["compile"]
    if compile_.status == "skipped":
        pytest.skip(f"{device} cannot run here: {compile_.reason}")
    assert code == 0 and checks["correctness"].status == "pass", checks

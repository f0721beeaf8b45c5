"""Real trained models from PyPI wheels (a DB text detector, an SVTR text recognizer, a MobileNetV3
classifier, a PicoDet layout detector), quantized by ONNX Runtime's own quantizer as its docs show,
on rendered text: `farm run --model M --inputs X --device host` passes, judged against the model's
exact semantics, on a reference that is not constant. Slow: each compiles a full model twice
(int8 and the fp32 baseline)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import HOST_ONLY
from tests.wheel_models import MODELS, quantize

pytestmark = pytest.mark.slow

# (model, QOperator, quant_pre_process first): ORT's quantizer itself crashes on the Paddle detectors'
# and recognizer's QOperator form without pre-processing ('NoneType' object has no attribute 'data_type')
CASES = [("ocr-det", False, False), ("ocr-rec", False, False), ("ocr-cls", False, False), ("layout", False, False),
         ("ocr-cls", True, False), ("ocr-det", True, True), ("ocr-rec", True, True), ("layout", True, True)]


@pytest.mark.parametrize(("name", "qoperator", "pre_process"), CASES,
                         ids=[f"{n}-{'qop' if q else 'qdq'}{'-pre' if p else ''}" for n, q, p in CASES])
def test_a_wheel_model_quantized_by_ort_passes_on_the_host(name, qoperator, pre_process, tmp_path, write):
    from farm.cli import main
    from farm.results.store import Store

    model = MODELS[name]
    if model.path() is None:
        pytest.skip(f"{model.package} is not installed: pip install --no-deps -r tests/model-wheels.txt "
                    "(scripts/bootstrap.sh does)")
    path = tmp_path / f"{name}.onnx"
    quantize(model, path, qoperator, pre_process)
    np.save(tmp_path / "input.npy", model.inputs(100))  # a seed calibration did not see
    data = tmp_path / "data"
    code = main(["run", "--model", str(path), "--inputs", str(tmp_path / "input.npy"), "--data-dir", str(data),
                 "--devices", str(write("devices.yaml", HOST_ONLY))])
    with Store(data / "results.db") as store:
        checks = {r.check: r for r in store.results(store.run()["id"])}
    corr = checks["correctness"]
    assert code == 0 and corr.status == "pass", corr
    assert corr.metrics["constant_outputs"] == [], corr.metrics  # real text, a real answer
    assert corr.metrics.get("exact_reference") == "float64" and corr.metrics["exact"] >= 0.999, corr.metrics
    assert checks["latency"].status == "pass" and checks["latency-fp32"].status == "pass"

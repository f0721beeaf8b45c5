"""Real inputs from files (.npy, .npz, ONNX test_data_set folders) instead of seeded noise, and the
expected outputs a test_data_set carries, checked on the device's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from farm.errors import FarmError
from farm.models.input_files import load_input_files
from farm.models.reference import TensorInfo
from tests.conftest import HOST_ONLY
from tests.qdq_graphs import QDQ

INFO = [TensorInfo("input", [1, 3, 8, 8], "float32")]


def _model(tmp_path):
    g = QDQ()
    conv = g.node("Conv", [g.qdq("input", 2 / 255), g.weight([4, 3, 3, 3], True)], pads=[1, 1, 1, 1])
    m = g.model([1, 3, 8, 8], g.qdq(conv, 0.05), [1, 4, 8, 8])
    path = tmp_path / "conv.onnx"
    onnx.save(m, str(path))
    return path, m.graph.output[0].name


def _data_set(folder, x: np.ndarray, outputs: list[np.ndarray] = ()):
    folder.mkdir(parents=True)
    (folder / "input_0.pb").write_bytes(numpy_helper.from_array(x, "input").SerializeToString())
    for k, o in enumerate(outputs):
        (folder / f"output_{k}.pb").write_bytes(numpy_helper.from_array(o).SerializeToString())
    return folder


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)


def test_each_format_gives_its_arrays(tmp_path):
    x0, x1 = _x(0), _x(1)
    np.save(tmp_path / "a.npy", x0)
    np.savez(tmp_path / "named.npz", input=x1)
    np.savez(tmp_path / "positional.npz", x0)
    sets = load_input_files([tmp_path / "a.npy", tmp_path / "named.npz", tmp_path / "positional.npz"], INFO)
    assert [s["input"] for s in sets.feeds][0] is not None
    for got, want in zip(sets.feeds, [x0, x1, x0], strict=True):
        np.testing.assert_array_equal(got["input"], want)
    assert sets.expected is None  # .npy/.npz carry no outputs

    root = tmp_path / "cases"
    y = np.ones((1, 4, 8, 8), np.float32)
    _data_set(root / "test_data_set_1", x1, [y * 2])
    _data_set(root / "test_data_set_0", x0, [y])
    sets = load_input_files([root], INFO)  # a folder of test_data_set folders: all of them, in order
    assert [s.endswith(f"test_data_set_{k}") for k, s in enumerate(sets.sources)] == [True, True]
    np.testing.assert_array_equal(sets.feeds[1]["input"], x1)
    np.testing.assert_array_equal(sets.expected[1][0], y * 2)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: np.save(p / "f.npy", np.zeros((1, 3, 4, 4), np.float32)) or p / "f.npy",
     "input 'input' is float32[1, 3, 4, 4], the model takes float32[1, 3, 8, 8]"),
    (lambda p: np.save(p / "f.npy", np.zeros((1, 3, 8, 8), np.float64)) or p / "f.npy", "is float64"),
    (lambda p: np.savez(p / "f.npz", x=_x(), y=_x()) or p / "f.npz", "has no array 'arr_0'"),
    (lambda p: _file(p / "f.npy", b"\x93NUMPY garbage"), "cannot be read"),
    (lambda p: _file(p / "f.txt", b"1 2 3"), "is not a .npy, .npz or test_data_set"),
    (lambda p: (p / "d").mkdir() or p / "d", "holds neither input_*.pb files nor test_data_set_*"),
    (lambda p: p / "missing.npy", "does not exist"),
])
def test_bad_input_files_are_one_line(tmp_path, make, fragment):
    with pytest.raises(FarmError) as err:
        load_input_files([make(tmp_path)], INFO)
    msg = err.value.format()
    assert fragment in msg and " — " in msg and "\n" not in msg, msg


def test_expected_outputs_are_checked_on_the_device(tmp_path, write):
    """A test_data_set with the right outputs passes and says so; one whose outputs are off fails
    the correctness check as a wrong answer, naming the output and how far it is off."""
    from farm.cli import main
    from farm.results.store import Store

    path, out = _model(tmp_path)
    x = _x(3)
    opts = ort.SessionOptions()  # the model's own semantics: ORT's fused u8s8 kernels saturate on AVX2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    right = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    good = _data_set(tmp_path / "good" / "test_data_set_0", x, [right])
    bad = _data_set(tmp_path / "bad" / "test_data_set_0", x, [right + 1.0])
    devices = str(write("devices.yaml", HOST_ONLY))

    def run(inputs):
        data = tmp_path / f"data-{inputs.parent.name}"
        code = main(["run", "--model", str(path), "--inputs", str(inputs), "--devices", devices,
                     "--data-dir", str(data)])
        with Store(data / "results.db") as store:
            return code, {r.check: r for r in store.results(store.run()["id"])}["correctness"]

    code, ok = run(good)
    assert code == 0 and ok.status == "pass" and ok.metrics["expected_outputs"] == "equal", ok
    code, off = run(bad)
    assert code == 1 and off.status == "fail" and off.kind == "wrong-answer", off
    assert off.metrics["expected_outputs"] == "differ"
    assert "differ from the expected ones" in off.reason and "max diff 1" in off.reason, off.reason


def test_inputs_need_a_model_and_existing_files(tmp_path, write, capsys):
    from farm.cli import main

    path, _ = _model(tmp_path)
    devices = str(write("devices.yaml", HOST_ONLY))
    assert main(["run", "--suite", "smoke", "--inputs", str(path), "--devices", devices,
                 "--data-dir", str(tmp_path / "d")]) == 2
    assert "--inputs goes with --model" in capsys.readouterr().err
    assert main(["run", "--model", str(path), "--inputs", str(tmp_path / "nope.npz"), "--devices", devices,
                 "--data-dir", str(tmp_path / "d")]) == 2
    assert "nope.npz does not exist" in capsys.readouterr().err


def test_a_suite_names_its_input_files_relative_to_itself(tmp_path, write):
    from farm.config.suites import load_suite
    from tests.conftest import assert_config_error

    np.save(tmp_path / "x.npy", _x())
    suite = load_suite(write("s.yaml", """
        model: {path: conv.onnx}
        inputs:
          files: [x.npy]
    """))
    assert suite.inputs.files == (tmp_path / "x.npy",)
    bad = write("t.yaml", """
        model: {path: conv.onnx}
        inputs:
          files:
            - x.npy
            - y.npz
    """)
    assert_config_error(load_suite, bad, 5, "input file")


def test_a_model_with_dynamic_sizes_is_compiled_at_its_input_files_shape(tmp_path, write, capsys):
    """A detector exported with dynamic height and width ([N, 3, H, W]) runs at the shape of the
    input files it is given; without files it is a one-line error saying so."""
    from farm.cli import main
    from farm.results.store import Store

    path, _ = _model(tmp_path)
    m = onnx.load(str(path))
    for d, name in zip(m.graph.input[0].type.tensor_type.shape.dim, ["N", None, "H", "W"], strict=True):
        if name:
            d.dim_param = name
    for d in m.graph.output[0].type.tensor_type.shape.dim:
        d.dim_param = "dyn"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(m, str(dynamic))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 12, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    devices = str(write("devices.yaml", HOST_ONLY))
    data = tmp_path / "data"
    assert main(["run", "--model", str(dynamic), "--inputs", str(tmp_path / "x.npy"), "--devices", devices,
                 "--data-dir", str(data)]) == 0
    with Store(data / "results.db") as store:
        checks = {r.check: r for r in store.results(store.run()["id"])}
    assert checks["correctness"].status == "pass" and checks["correctness"].metrics["elements"] == 4 * 12 * 20
    assert main(["run", "--model", str(dynamic), "--devices", devices, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "dynamic size 'H' on axis 2" in err and "give input files of the shape to compile" in err, err


def test_input_files_over_the_bound_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """Reading a dynamic model's shapes from its files and loading them are bounded alike."""
    from farm.models import input_files

    np.save(tmp_path / "x.npy", _x())  # 768 bytes of data
    monkeypatch.setattr(input_files, "MAX_INPUT_BYTES", 512)
    for read in (lambda: input_files.file_shapes([tmp_path / "x.npy"], ["input"]),
                 lambda: load_input_files([tmp_path / "x.npy"], INFO)):
        with pytest.raises(FarmError, match="the input files take more than"):
            read()

"""The one line shown for an exception from a library (TVM, ONNX, LiteRT)."""

from __future__ import annotations

from farm.errors import error_line


def test_error_line_picks_the_useful_line():
    assert error_line(ValueError("bad shape\n  more detail")) == "bad shape"
    tvm_like = RuntimeError("Traceback (most recent call last):\n  1: foo\n  0: bar\nTVMError: the cause")
    assert error_line(tvm_like) == "TVMError: the cause"
    rpc = RuntimeError("RPCError: Error caught from RPC call:\n  File x.cc, line 3\nValueError: shape mismatch")
    assert error_line(rpc) == "ValueError: shape mismatch"  # what runner._remote reports for a device
    assert error_line(RuntimeError("")) == "RuntimeError"  # str(e).splitlines()[0] raised IndexError here
    assert error_line(RuntimeError("   \n ")) == "RuntimeError"
    assert error_line(RuntimeError("x" * 500), width=40) == "x" * 40


def test_a_dynamic_spatial_size_is_one_line_with_the_fix(tmp_path, capsys):
    """A model whose input height/width are symbolic cannot be compiled for fixed shapes: one line
    naming the input and axis, and ORT's own tool to fix it — not a crash in the reference."""
    import onnx
    from onnx import TensorProto, helper

    from farm.cli import main
    from tests.conftest import HOST_ONLY

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dyn.onnx")
    (tmp_path / "devices.yaml").write_text(HOST_ONLY)
    rc = main(["run", "--model", str(tmp_path / "dyn.onnx"), "--devices", str(tmp_path / "devices.yaml"),
               "--data-dir", str(tmp_path / "data")])
    full = capsys.readouterr().err
    err = [ln for ln in full.splitlines() if ln.startswith("farm:")]  # after the progress lines
    assert rc == 2 and len(err) == 1 and "Traceback" not in full, full
    assert "input 'x' has a dynamic size 'H' on axis 2" in err[0]
    assert "make_dynamic_shape_fixed --input_name x --input_shape 1,3,<H>,8" in err[0]


def test_a_bug_in_farm_is_one_line_and_a_saved_traceback(tmp_path, capsys, monkeypatch):
    """Any exception that is not a FarmError (a bug) still ends in one line, exit 1, with the full
    traceback kept in the data dir's logs for the report."""
    from farm.cli import commands, main

    def broken(args, command):
        raise KeyError("plan")

    monkeypatch.setattr(commands, "cmd_status", broken)
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("farm: internal error: 'plan' — a bug in farm"), err
    saved = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(saved) == 1 and "Traceback" in saved[0].read_text() and str(saved[0]) in err[0]

"""The one line shown for an exception from a library (TVM, ONNX, LiteRT)."""

from __future__ import annotations

from farm.errors import error_line


def test_error_line_picks_the_useful_line():
    assert error_line(ValueError("bad shape\n  more detail")) == "bad shape"
    tvm_like = RuntimeError("Traceback (most recent call last):\n  1: foo\n  0: bar\nTVMError: the cause")
    assert error_line(tvm_like) == "TVMError: the cause"
    assert error_line(RuntimeError("")) == "RuntimeError"  # str(e).splitlines()[0] raised IndexError here
    assert error_line(RuntimeError("   \n ")) == "RuntimeError"
    assert error_line(RuntimeError("x" * 500), width=40) == "x" * 40

"""The float32 network behind a full-integer TFLite model, for the fp32 latency baseline.

Every quantized tensor becomes float32 (constants dequantized, per axis where they are), except
the graph inputs: they keep their integer type and a DEQUANTIZE op feeds the float network, so
the baseline runs on the same inputs as the int8 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from farm.errors import NoBaseline
from farm.models.tflite import read_tflite
from farm.models.tflite_writer import TFLITE_TYPES

_INT_TYPES = {v: np.dtype(k) for k, v in TFLITE_TYPES.items() if k in ("int8", "uint8", "int32")}


def _code(c) -> int:
    return max(int(c.builtinCode), int(c.deprecatedBuiltinCode))


def float_tflite(path: Path) -> bytes:
    """The .tflite bytes of the float32 model derived from the integer model at `path`."""
    m = fb.ModelT.InitFromPackedBuf(read_tflite(path), 0)
    sg = m.subgraphs[0]
    if any(_code(m.operatorCodes[o.opcodeIndex]) in (fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.DEQUANTIZE)
           for o in sg.operators):
        raise NoBaseline(f"cannot derive a float32 model from {path.name}: it has QUANTIZE/DEQUANTIZE ops")
    inputs = set(sg.inputs)
    for i, t in enumerate(sg.tensors):
        q = t.quantization
        if i in inputs or t.type not in _INT_TYPES or q is None or q.scale is None or not len(q.scale):
            continue
        buf = m.buffers[t.buffer]
        if buf.data is not None and len(buf.data):
            buf.data = _dequantize(np.asarray(buf.data, np.uint8).view(_INT_TYPES[t.type]).reshape(t.shape), q)
        elif buf.offset:
            raise NoBaseline(f"cannot derive a float32 model from {path.name}: external buffers")
        t.type, t.quantization = fb.TensorType.FLOAT32, None
    code = len(m.operatorCodes)
    m.operatorCodes.append(_opcode(fb.BuiltinOperator.DEQUANTIZE))
    for i in sg.inputs:
        if sg.tensors[i].quantization is None:
            continue
        f = fb.TensorT()
        f.shape, f.type, f.buffer, f.name = sg.tensors[i].shape, fb.TensorType.FLOAT32, 0, b"dequantized_input"
        sg.tensors.append(f)
        new = len(sg.tensors) - 1
        for o in sg.operators:
            o.inputs = [new if x == i else x for x in o.inputs]
        deq = fb.OperatorT()
        deq.opcodeIndex, deq.inputs, deq.outputs = code, [i], [new]
        sg.operators.insert(0, deq)
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _opcode(code: int):
    c = fb.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
    return c


def _dequantize(data: np.ndarray, q) -> np.ndarray:
    scale = np.asarray(q.scale, dtype=np.float64)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], dtype=np.float64)
    shape = [1] * data.ndim
    if scale.size > 1:
        shape[q.quantizedDimension] = -1
    real = (data.astype(np.float64) - zp.reshape(shape if zp.size > 1 else [1] * data.ndim)) * scale.reshape(shape)
    return real.astype(np.float32).reshape(-1).view(np.uint8)

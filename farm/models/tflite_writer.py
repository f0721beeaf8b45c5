"""Writes TFLite flatbuffers from code, with TFLite's own schema (the object API LiteRT ships).

There is no TensorFlow here to convert models with, so farm's builtin TFLite models are written
directly: tensors with their real quantization parameters, constant buffers, and builtin
operators with their options, as the TFLite converter would emit them."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

TFLITE_TYPES = {"float32": fb.TensorType.FLOAT32, "int32": fb.TensorType.INT32,
                "int8": fb.TensorType.INT8, "uint8": fb.TensorType.UINT8,
                "int64": fb.TensorType.INT64}
FUSED = {None: fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
         "relu6": fb.ActivationFunctionType.RELU6}


class FlatModel:
    """Tensors, buffers and operators of one subgraph; `serialize()` gives the .tflite bytes."""

    def __init__(self, description: str = "farm"):
        self.description = description
        self.buffers: list = [fb.BufferT()]  # buffer 0: the empty buffer of every activation
        self.tensors: list = []
        self.ops: list = []
        self.opcodes: dict[int, int] = {}  # builtin code → index in operatorCodes

    def tensor(self, name: str, shape: list[int], dtype: str, scale=None, zero_point=None,
               axis: int = 0, data: np.ndarray | None = None) -> int:
        """Add a tensor (a constant when `data` is given); returns its index."""
        t = fb.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], TFLITE_TYPES[dtype]
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
            q.quantizedDimension = axis
            t.quantization = q
        if data is not None:
            b = fb.BufferT()
            b.data = np.ascontiguousarray(data, dtype=np.dtype(dtype)).view(np.uint8).reshape(-1)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
           options=None) -> None:
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[code], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.ops.append(o)

    def serialize(self, inputs: list[int], outputs: list[int]) -> bytes:
        sg = fb.SubGraphT()
        sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = \
            self.tensors, self.ops, inputs, outputs, "main"
        codes = []
        for code in self.opcodes:  # dicts keep insertion order = opcode index
            c = fb.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, 127)
            c.version = 1
            codes.append(c)
        m = fb.ModelT()
        m.version, m.description = 3, self.description
        m.operatorCodes, m.subgraphs, m.buffers = codes, [sg], self.buffers
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def conv_options(stride: int, padding: str, act: str | None, depth_multiplier: int | None = None):
    """Conv2DOptions (or DepthwiseConv2DOptions with a depth multiplier): (type, options)."""
    o = fb.DepthwiseConv2DOptionsT() if depth_multiplier else fb.Conv2DOptionsT()
    o.padding = fb.Padding.SAME if padding == "same" else fb.Padding.VALID
    o.strideH = o.strideW = stride
    o.dilationHFactor = o.dilationWFactor = 1
    o.fusedActivationFunction = FUSED[act]
    if depth_multiplier:
        o.depthMultiplier = depth_multiplier
        return fb.BuiltinOptions.DepthwiseConv2DOptions, o
    return fb.BuiltinOptions.Conv2DOptions, o


def pool_options(k: int, stride: int, padding: str):
    o = fb.Pool2DOptionsT()
    o.padding = fb.Padding.SAME if padding == "same" else fb.Padding.VALID
    o.strideH = o.strideW = stride
    o.filterHeight = o.filterWidth = k
    o.fusedActivationFunction = FUSED[None]
    return fb.BuiltinOptions.Pool2DOptions, o


def fc_options(act: str | None):
    o = fb.FullyConnectedOptionsT()
    o.fusedActivationFunction = FUSED[act]
    return fb.BuiltinOptions.FullyConnectedOptions, o


def add_options(act: str | None):
    o = fb.AddOptionsT()
    o.fusedActivationFunction = FUSED[act]
    return fb.BuiltinOptions.AddOptions, o


def reducer_options(keep_dims: bool):
    o = fb.ReducerOptionsT()
    o.keepDims = keep_dims
    return fb.BuiltinOptions.ReducerOptions, o


def softmax_options(beta: float = 1.0):
    o = fb.SoftmaxOptionsT()
    o.beta = beta
    return fb.BuiltinOptions.SoftmaxOptions, o


def reshape_options(shape: list[int]):
    o = fb.ReshapeOptionsT()
    o.newShape = shape
    return fb.BuiltinOptions.ReshapeOptions, o


OP = fb.BuiltinOperator

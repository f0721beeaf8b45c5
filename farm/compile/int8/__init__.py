"""Real int8: integer lowering of quantized Relax modules (lower.py dispatching to one module per op
family: dot.py, elementwise.py, pools.py; qparams.py, requant.py, fixedpoint.py), TFLite import
(tflite_lower.py, tflite_arith.py, tflite_softmax.py) and QOperator → QDQ import (qoperator.py)."""

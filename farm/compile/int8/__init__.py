"""Real int8: integer lowering of quantized Relax modules (lower.py, fixedpoint.py) and
QOperator → QDQ import (qoperator.py)."""

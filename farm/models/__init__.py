"""Builtin models, ONNX/TFLite loading and rewrites, and the references they are checked against."""

"""ONNX/TFLite → Relax import, int8 lowering, schedules, the build, its cache and lowering report — no devices."""

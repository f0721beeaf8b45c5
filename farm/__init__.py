"""farm: a test-farm orchestrator for int8 models compiled with Apache TVM."""

__version__ = "0.1.0"

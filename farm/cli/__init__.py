"""The `farm` command: the only place that parses arguments and prints (main.py: the parser and
the command table; commands.py, report.py: one function per command)."""

from farm.cli.main import main

__all__ = ["main"]

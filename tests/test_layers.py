"""The stage layering of pyproject's [tool.importlinter] holds: no stage imports a later one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from farm.config.paths import REPO

# lint-imports on the `farm` package found first from `cwd` (a copy there wins over the install)
_LINT = "import sys; sys.path.insert(0, '.'); from importlinter.cli import lint_imports_command as c; c()"


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_stages_import_only_earlier_stages():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_backward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package where config imports the run stage is rejected."""
    shutil.copytree(REPO / "farm", tmp_path / "farm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bad = tmp_path / "farm" / "config" / "paths.py"
    bad.write_text(bad.read_text() + "\nfrom farm.run import runner  # noqa\n")
    res = _lint_imports(tmp_path)
    assert res.returncode != 0
    assert "farm.config.paths -> farm.run.runner" in res.stdout

"""`farm matrix`: a matrix file read into the engine's Plan of suites × devices, which runs one
worker process per device, all results under one run id in the shared SQLite history.

A matrix file (suites/nightly.yaml):

    name: nightly
    entries:
      - suite: smoke              # suite name (suites/NAME.yaml) or a .yaml path
        devices: [x86, arm64-qemu] # names or tags; default: the suite's own `devices`
        repeat: 50                 # overrides the suite's latency.repeat
    parallel: 2                    # devices run at once (default: all); local devices share the
                                   # host's cores, so their latencies disturb each other
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from farm.config.devices import Registry
from farm.config.schema import Node
from farm.config.yamlsrc import Source, load_yaml
from farm.errors import ConfigError
from farm.run.engine import Pair, Plan, pick


def load_matrix(path: str | Path, registry: Registry, suites_dir: Path) -> Plan:
    """Read and validate a matrix file against the device registry; errors name file:line."""
    src = load_yaml(path)
    root = Node(src, (), src.data, "matrix file")
    name = root.get("name", str, Path(path).stem)
    items = root.get("entries", list, required=True)
    parallel = root.number("parallel", int, None, lo=1)
    root.done()
    if not items:
        raise src.error(("entries",), "the matrix has no entries", "add `- suite: NAME` items")
    here = Path(path).resolve().parent
    pairs = [pair for i, data in enumerate(items) for pair in _entry(src, i, data, registry, here, suites_dir)]
    return Plan(tuple(pairs), processes=True, parallel=parallel, name=name)


def _entry(src: Source, i: int, data, registry: Registry, here: Path, suites_dir: Path) -> tuple[Pair, ...]:
    node = Node(src, ("entries", i), data, f"matrix entry #{i + 1}")
    suite = node.get("suite", str, required=True)
    selectors = node.str_list("devices")
    for j, sel in enumerate(selectors):
        if error := registry.unknown(sel):
            raise src.error(("entries", i, "devices", j), error.what, error.todo)
    repeat = node.number("repeat", int, None, lo=1)
    node.done()
    try:  # suites beside the matrix file win
        plan = pick(registry, [suite], selectors, suites_dir=here if (here / f"{suite}.yaml").exists()
                    else suites_dir)
    except ConfigError as e:
        if e.file and e.file != src.file and e.line:  # a problem inside the suite or devices file
            raise
        raise node.error("suite", e.what, e.todo) from None
    if repeat is None:
        return plan.pairs
    return tuple((replace(s, latency=replace(s.latency, repeat=repeat)), devices) for s, devices in plan.pairs)

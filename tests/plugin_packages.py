"""Make plugin packages visible to ``importlib.metadata`` in the test process, without pip.

A ``*.dist-info`` folder (``METADATA`` + the ``entry_points.txt`` generated from the project's ``pyproject.toml``)
in a folder on ``sys.path``, next to the package sources on ``sys.path``, is all ``importlib.metadata`` looks at.
``plugins/check_plugins.sh`` and ``tests/test_plugin_tutorial.py`` install real packages with pip instead.
"""

from __future__ import annotations

import sys
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def write_dist_info(site: Path, project: Path) -> str:
    """Write the dist-info of the project in *project* (its ``pyproject.toml``) into *site*; return its name."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return meta["name"]


def forget_plugins(module_prefixes: tuple[str, ...]) -> None:
    """Make the registries read entry points again, and forget the plugin modules already imported."""
    from zsad.components import all_registries

    for registry in all_registries():
        registry.refresh()
    for name in [m for m in sys.modules if m.startswith(module_prefixes)]:
        del sys.modules[name]


@contextmanager
def installed(site: Path, projects: list[Path], module_prefixes: tuple[str, ...]) -> Iterator[None]:
    """The *projects* (folders with a pyproject.toml and ``src/``) visible as installed plugins in this block."""
    for project in projects:
        write_dist_info(site, project)
    paths = [str(site)] + [str(p / "src") for p in projects]
    sys.path[:0] = paths
    forget_plugins(module_prefixes)
    try:
        yield
    finally:
        for path in paths:
            sys.path.remove(path)
        forget_plugins(module_prefixes)

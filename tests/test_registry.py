"""The generic registry: decorators, lazy entry-point plugins, failure isolation, suggestions, duplicates."""

from __future__ import annotations

import sys
import textwrap

import pytest

import zsad
from zsad.errors import DuplicateComponentError, PluginError, UnknownComponentError
from zsad.registry import Registry


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """Two fake installed distributions with entry points in group 'zsad.test_widgets'."""
    pkg = tmp_path / "site"
    (pkg / "good_widgets").mkdir(parents=True)
    (pkg / "good_widgets" / "__init__.py").write_text("def make(x=1):\n    'A good widget.'\n    return ('good', x)\n")
    (pkg / "bad_widgets").mkdir()
    (pkg / "bad_widgets" / "__init__.py").write_text("raise RuntimeError('boom at import')\n")
    (pkg / "notcallable_widgets.py").write_text("THING = 42\n")
    for dist, eps in {
        "good_widgets-1.2": "good = good_widgets:make",
        "bad_widgets-0.1": "bad = bad_widgets:make",
        "weird_widgets-0.3": "weird = notcallable_widgets:THING",
    }.items():
        info = pkg / f"{dist}.dist-info"
        info.mkdir()
        name, version = dist.split("-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(f"[zsad.test_widgets]\n{eps}\n"))
    monkeypatch.syspath_prepend(str(pkg))
    yield
    for mod in ("good_widgets", "bad_widgets", "notcallable_widgets"):
        sys.modules.pop(mod, None)


def _reg():
    def validator(obj):
        if not callable(obj):
            raise TypeError(f"expected a callable, got {type(obj).__name__}")

    return Registry("widgets", "zsad.test_widgets", validator)


def test_listing_does_not_import_plugins(plugin_env):
    reg = _reg()
    assert reg.list() == ["bad", "good", "weird"]
    assert "good_widgets" not in sys.modules and "bad_widgets" not in sys.modules
    assert reg.create("good", x=3) == ("good", 3)


def test_broken_plugin_is_isolated(plugin_env):
    reg = _reg()
    with pytest.raises(PluginError, match=r"'bad' from distribution 'bad_widgets'.*boom at import.*pip uninstall bad_widgets"):
        reg.get("bad")
    with pytest.raises(PluginError, match="contract violated: expected a callable, got int"):
        reg.get("weird")
    assert reg.create("good") == ("good", 1)  # others keep working
    status = {i.name: i for i in reg.status(load=True)}
    assert status["good"].status == "ok" and status["good"].version == "1.2"
    assert status["good"].distribution == "good_widgets" and status["good"].description == "A good widget."
    assert status["bad"].status.startswith("error: import failed")
    assert status["weird"].status.startswith("error: contract violated")


def test_unknown_name_suggests_close_matches():
    reg = Registry("widgets")
    reg.add("round_widget", lambda: 1)
    with pytest.raises(UnknownComponentError, match="Did you mean: 'round_widget'"):
        reg.get("rond_widget")
    with pytest.raises(UnknownComponentError) as err:
        zsad.create_head("S6")
    assert "'S5'" in str(err.value) and "Known heads" in str(err.value)


def test_duplicates_refused_unless_override(plugin_env):
    reg = _reg()
    reg.add("mine", lambda: 1)
    with pytest.raises(DuplicateComponentError, match="override=True"):
        reg.add("mine", lambda: 2)
    with pytest.raises(DuplicateComponentError, match="plugin entry point good_widgets:make"):
        reg.add("good", lambda: 2)
    reg.add("mine", lambda: 3, override=True)
    assert reg.create("mine") == 3
    reg.add("good", lambda: "local", override=True)
    assert reg.create("good") == "local"


def test_builtin_registries_are_lazy_and_complete():
    code = "import sys, zsad; zsad.list_backbones(); zsad.list_heads(); zsad.list_recipes(); print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    assert {"tips", "open_clip", "siglip2"} <= set(zsad.list_backbones())
    assert {"S1", "S2", "S3", "S4", "S5", "pixel_map"} <= set(zsad.list_heads())
    assert {"fixed", "learnable", "decoupled"} <= set(zsad.list_prompts())
    assert "tipsomaly" in zsad.list_recipes()


def test_runtime_registration_decorators():
    from zsad.components import HEADS
    from zsad.heads.image import GlobalHead

    @zsad.register_head("object_only_test")
    def object_only():
        """Only the object token."""
        return GlobalHead("object")

    try:
        assert isinstance(zsad.create_head("object_only_test"), GlobalHead)
        assert HEADS.describe("object_only_test") == "Only the object token."
    finally:
        HEADS.unregister("object_only_test")

"""Plugins through real entry-point metadata: discovery, listing, recipes, and failure isolation.

The two packages under ``plugins/`` are made visible without pip (tests/plugin_packages.py);
``plugins/check_plugins.sh`` does the same with pip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from plugin_packages import installed

import zsad
from zsad.components import (
    BACKBONES,
    HEADS,
    RECIPES,
    create_backbone,
    create_head,
)
from zsad.errors import PluginError

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PACKAGES = ("zsad-example-plugin", "zsad-broken-plugin")


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """Both plugin packages visible to importlib.metadata for the tests of this module."""
    with installed(tmp_path_factory.mktemp("site"), [PLUGINS / p for p in PACKAGES],
                   ("zsad_example_plugin", "zsad_broken_plugin")):
        yield


def _status(registry, name):
    return next(info for info in registry.status(load=True) if info.name == name)


def test_listed_from_metadata_without_importing(plugins):
    assert {"example_mean_color", "broken_import", "broken_not_callable"} <= set(zsad.list_backbones())
    assert {"max_patch", "S2_plus_mean", "broken_head"} <= set(zsad.list_heads())
    assert "example_mean_color" in zsad.list_recipes()
    assert not any(m.startswith(("zsad_example_plugin", "zsad_broken_plugin")) for m in sys.modules)
    info = next(i for i in BACKBONES.status() if i.name == "example_mean_color")
    assert (info.source, info.distribution, info.version, info.status) == (
        "plugin", "zsad-example-plugin", "0.1.0", "not loaded")


def test_status_reports_kind_distribution_version_and_health(plugins):
    ok = _status(BACKBONES, "example_mean_color")
    assert (ok.kind, ok.distribution, ok.version, ok.status) == ("backbones", "zsad-example-plugin", "0.1.0", "ok")
    assert ok.target == "zsad_example_plugin.backbone:create_mean_color" and ok.description.startswith("A mean-colour")
    assert _status(HEADS, "S2_plus_mean").status == "ok" and _status(RECIPES, "example_mean_color").status == "ok"
    broken = _status(BACKBONES, "broken_import")
    assert broken.distribution == "zsad-broken-plugin" and broken.version == "0.0.1"
    assert broken.status.startswith("error: import failed: RuntimeError: zsad-broken-plugin")
    assert _status(BACKBONES, "broken_not_callable").status.startswith("error: contract violated: expected a callable")
    assert _status(HEADS, "broken_head").status.startswith("error: import failed: ModuleNotFoundError")
    builtin = _status(BACKBONES, "tips")
    assert builtin.source == "builtin" and builtin.status == "ok"


def test_a_broken_plugin_fails_for_its_own_names_only(plugins):
    with pytest.raises(PluginError, match=r"plugin 'broken_import' from distribution 'zsad-broken-plugin'.*"
                                          r"pip uninstall zsad-broken-plugin"):
        create_backbone("broken_import")
    with pytest.raises(PluginError, match="broken_not_callable.*contract violated"):
        create_backbone("broken_not_callable")
    with pytest.raises(PluginError, match="'broken_not_a_backbone' returned object, not a zsad"):
        create_backbone("broken_not_a_backbone")
    with pytest.raises(PluginError, match="broken_head"):
        create_head("broken_head")
    # everything else keeps working, listing included
    assert "tips" in zsad.list_backbones() and "S5" in zsad.list_heads()
    assert type(create_backbone("example_mean_color")).__name__ == "MeanColorBackbone"
    assert type(create_head("max_patch")).__name__ == "MaxPatchHead"


def test_zsad_testing_catches_the_contract_violating_plugin(plugins):
    from zsad.testing import (
        check_backbone,
        check_head,
        parametrize_backbones,
        tiny_options,
    )

    with pytest.raises(AssertionError, match="not L2-normalised"):
        check_backbone(create_backbone("broken_unnormalised"))
    check_backbone("example_mean_color")  # built from the factory's zsad_tiny_options
    check_head("S2_plus_mean")
    assert tiny_options("example_mean_color") == {}
    assert parametrize_backbones(["example_mean_color"]).args[1][0].id == "example_mean_color"


def test_plugin_components_in_recipes(plugins):
    image = np.full((40, 60, 3), 128, np.uint8)
    det = zsad.Detector.from_recipe("example_mean_color", device="cpu")
    r = det.predict(image, class_name="metal_nut")
    assert set(r.scores) == {"S2", "max_patch", "S2_plus_mean"} and r.pred_score == r.scores["S2_plus_mean"]
    det = zsad.Detector.from_recipe(
        "tipsomaly", backbone="example_mean_color", backbone_checkpoint=None, prompt_checkpoint=None,
        image_heads=["S5", "max_patch"], image_score="max_patch", image_size=56, device="cpu",
    )
    with pytest.warns(UserWarning, match="untrained"):  # decoupled prompts, learned tokens not trained
        r = det.predict(image, class_name="metal_nut")
    assert r.pred_score == r.scores["max_patch"] and r.anomaly_map.shape == (40, 60)


def test_check_plugins_script_is_there():
    script = PLUGINS / "check_plugins.sh"
    assert script.is_file() and "pip install" in script.read_text()
    for package in PACKAGES:
        meta = tomllib.loads((PLUGINS / package / "pyproject.toml").read_text())
        assert meta["project"]["entry-points"]["zsad.backbones"]


def test_zsad_recipes_shows_the_plugin_recipes_own_description(plugins, capsys):
    import re

    from zsad.cli import main

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^example_mean_color +Plugin demo: mean-colour backbone", out, re.M), out

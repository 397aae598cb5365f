"""Configuration documents: validation naming fields, overrides, save/load, recipes."""

from __future__ import annotations

import json

import pytest

from zsad import get_recipe, register_recipe
from zsad.components import RECIPES
from zsad.config import DetectorConfig
from zsad.errors import ConfigError


def test_recipe_round_trip(tmp_path):
    cfg = get_recipe("tipsomaly")
    assert cfg.backbone.checkpoint == "tips-v1-l14-hr" and cfg.prompts.checkpoint == "tipsomaly-mvtec"
    path = cfg.save(tmp_path / "r.json")
    assert DetectorConfig.load(path) == cfg
    assert get_recipe(str(path)) == cfg


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"heads\.sigma: Input should be greater than or equal to 0 \(got -1\)"):
        get_recipe("tipsomaly").with_overrides(sigma=-1)
    with pytest.raises(ConfigError, match="heads: .*image_score 'S9' is not among image_heads"):
        get_recipe("tipsomaly").with_overrides(image_score="S9")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backbone": {"nam": "tips"}}))
    with pytest.raises(ConfigError, match=r"bad\.json: backbone\.nam: Extra inputs are not permitted"):
        DetectorConfig.load(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DetectorConfig.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        DetectorConfig.load(tmp_path / "missing.json")


def test_overrides_flat_and_dotted():
    cfg = get_recipe("tipsomaly").with_overrides(**{"image_size": 336, "heads.truncate": 3.0, "backbone.options.dense_readout": "value"})
    assert cfg.preprocess.image_size == 336 and cfg.heads.truncate == 3.0
    assert cfg.backbone.options == {"dense_readout": "value"}
    with pytest.raises(ConfigError, match="Did you mean: image_size"):
        cfg.with_overrides(imagesize=3)
    with pytest.raises(ConfigError, match="Unknown recipe override 'heads.nope'"):
        cfg.with_overrides(**{"heads.nope": 1})


def test_configs_are_frozen():
    cfg = DetectorConfig()
    with pytest.raises(Exception):
        cfg.batch_size = 3  # type: ignore[misc]


def test_register_recipe_and_refuse_duplicates():
    cfg = get_recipe("tipsomaly").with_overrides(name="my_recipe_test", sigma=2)
    try:
        assert register_recipe(cfg) == "my_recipe_test"
        assert get_recipe("my_recipe_test").heads.sigma == 2
        with pytest.raises(Exception, match="already registered"):
            register_recipe(cfg)
    finally:
        RECIPES.unregister("my_recipe_test")


def test_head_options_memory_and_temperature():
    from zsad.config import DetectorConfig
    from zsad.errors import ConfigError

    cfg = DetectorConfig(heads={"image_heads": ["winclip"], "image_score": "winclip", "pixel": "winclip_map",
                                "memory": "winclip_memory", "temperature": 0.07,
                                "options": {"winclip_map": {"scales": [2, 3]}}})
    assert cfg.with_overrides(**{"heads.options.winclip_map.scales": [2]}).heads.options == {"winclip_map": {"scales": [2]}}
    assert cfg.with_overrides(**{"heads.options.winclip_memory.max_elements": 10}).heads.options["winclip_memory"] == {
        "max_elements": 10}
    assert cfg.with_overrides(temperature=None, memory="patch_memory").heads.temperature is None
    with pytest.raises(ConfigError, match=r"options are given for \['S5'\], which are not among the heads"):
        cfg.with_overrides(head_options={"S5": {}})
    with pytest.raises(ConfigError, match="temperature"):
        cfg.with_overrides(temperature=0)
    with pytest.raises(ConfigError, match="resize_backend"):
        cfg.with_overrides(resize_backend="cv2")


def test_unknown_head_options_name_the_head():
    from zsad import Detector
    from zsad.errors import ConfigError

    with pytest.raises(ConfigError, match=r"heads.options\['pixel_map'\]"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed", prompt_checkpoint=None,
                             image_size=56, backbone_options={"random_config": "tiny"}, device="cpu",
                             head_options={"pixel_map": {"radius": 3}})


def test_method_overrides_apply_inside_the_whole_options_they_refine():
    cfg = get_recipe("anomalyclip")
    # the order of keys does not matter: the whole backbone.options first, then dpam_start inside it
    out = cfg.with_overrides(dpam_start=2, **{"backbone.options": {"model_config": "tiny"}}, feature_layers=[3, 4])
    assert out.backbone.options == {"model_config": "tiny", "dpam_start": 2}
    assert out.heads.options["pixel_map"] == {"layers": [3, 4], "loss_weight": 4.0}
    assert (out.training.epochs, out.training.shuffle) == (15, True)
    assert get_recipe("tipsomaly").training.epochs == 2

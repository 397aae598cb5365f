#!/usr/bin/env bash
# CI check of zsad's plugin system with real pip-installed packages:
#   1. pip-install plugins/zsad-example-plugin and plugins/zsad-broken-plugin (no network: --no-deps,
#      --no-build-isolation), by default into a temporary --target folder put on PYTHONPATH for this script only,
#      so the deliberately broken plugin never leaks into the environment the rest of CI runs in;
#      ZSAD_PLUGINS_INSTALL=editable installs them with `pip install -e` into the current environment instead
#      and uninstalls them on exit;
#   2. run the example plugin's own tests (which use zsad.testing);
#   3. assert from Python: both are discovered and listed with distribution/version/status, the example plugin is
#      usable in a recipe, and the broken plugin fails for its own names only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1
PLUGINS=(plugins/zsad-example-plugin plugins/zsad-broken-plugin)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zsad-plugins.XXXXXX")
MODE=${ZSAD_PLUGINS_INSTALL:-target}

cleanup() {
  if [ "$MODE" = editable ]; then
    "$PY" -m pip uninstall --quiet --yes zsad-example-plugin zsad-broken-plugin || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== plugins: pip install (${MODE})"
if [ "$MODE" = editable ]; then
  "$PY" -m pip install --quiet --no-deps --no-build-isolation -e "${PLUGINS[0]}" -e "${PLUGINS[1]}"
else
  "$PY" -m pip install --quiet --no-deps --no-build-isolation --target "$WORK/site" "${PLUGINS[@]}"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  # pip builds in place: drop the build leftovers it writes next to the sources
  rm -rf plugins/*/build plugins/*/src/*.egg-info
fi

echo "== plugins: the example plugin's own tests"
"$PY" -m pytest plugins/zsad-example-plugin/tests -q -p no:cacheprovider

echo "== plugins: discovery, listing, recipes, failure isolation"
"$PY" - <<'EOF'
import numpy as np

import zsad
from zsad.components import all_registries, create_backbone
from zsad.errors import PluginError

status = {(i.kind, i.name): i for reg in all_registries() for i in reg.status(load=True)}
for (kind, name), info in sorted(status.items()):
    if info.source == "plugin":
        print(f"  {kind:9} {name:24} {info.distribution} {info.version}: {info.status}")

def expect(kind, name, dist, version, prefix):
    info = status.get((kind, name))
    assert info is not None, f"{kind} {name!r} was not discovered; found {sorted(status)}"
    assert info.source == "plugin", info
    assert (info.distribution, info.version) == (dist, version), info
    assert info.status.startswith(prefix), f"{kind} {name!r}: status {info.status!r}, expected {prefix!r}..."

for kind, name in [("backbones", "example_mean_color"), ("heads", "max_patch"), ("heads", "S2_plus_mean"),
                   ("recipes", "example_mean_color")]:
    expect(kind, name, "zsad-example-plugin", "0.1.0", "ok")
expect("backbones", "broken_import", "zsad-broken-plugin", "0.0.1", "error: import failed: RuntimeError")
expect("backbones", "broken_not_callable", "zsad-broken-plugin", "0.0.1", "error: contract violated")
expect("heads", "broken_head", "zsad-broken-plugin", "0.0.1", "error: import failed: ModuleNotFoundError")
expect("backbones", "broken_not_a_backbone", "zsad-broken-plugin", "0.0.1", "ok")  # caught when built

# the broken plugin fails for its own names only
for name in ("broken_import", "broken_not_callable", "broken_not_a_backbone"):
    try:
        create_backbone(name)
    except PluginError as exc:
        assert name in str(exc), exc
    else:
        raise AssertionError(f"create_backbone({name!r}) did not raise PluginError")
try:
    from zsad.testing import check_backbone

    check_backbone(create_backbone("broken_unnormalised"))
except AssertionError as exc:
    assert "not L2-normalised" in str(exc), exc
else:
    raise AssertionError("zsad.testing.check_backbone accepted unnormalised features")

assert {"tips", "open_clip", "siglip2", "example_mean_color", "broken_import"} <= set(zsad.list_backbones())
assert {"S5", "max_patch"} <= set(zsad.list_heads())

# usable in a recipe: the plugin's own, and a built-in recipe with the plugin backbone and head
image = np.full((40, 60, 3), 128, np.uint8)
det = zsad.Detector.from_recipe("example_mean_color", device="cpu")
r = det.predict(image, class_name="metal_nut")
assert r.pred_score == r.scores["S2_plus_mean"] and r.anomaly_map.shape == (40, 60), r
det = zsad.Detector.from_recipe(
    "tipsomaly", backbone="example_mean_color", backbone_checkpoint=None, prompt_strategy="fixed",
    prompt_checkpoint=None, image_heads=["S2", "max_patch"], image_score="max_patch", image_size=56, device="cpu",
)
r = det.predict(image, class_name="metal_nut")
assert set(r.scores) == {"S2", "max_patch"}, r.scores
# built-ins keep working next to the broken plugin
det = zsad.Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed", prompt_checkpoint=None,
                                image_size=56, backbone_options={"random_config": "tiny"}, device="cpu")
assert det.predict(image, class_name="metal_nut").anomaly_map.shape == (40, 60)
print("plugins: OK")
EOF

echo "== plugins: \`zsad plugins\` lists them with distribution, version and status"
listing=$("$PY" -m zsad plugins)
echo "$listing"
for expected in "^example_mean_color +backbone +plugin +zsad-example-plugin +0\.1\.0 +ok$" \
                "^max_patch +head +plugin +zsad-example-plugin +0\.1\.0 +ok$" \
                "^broken_import +backbone +plugin +zsad-broken-plugin +0\.0\.1 +error: import failed"; do
  if ! grep -qE -- "$expected" <<<"$listing"; then
    echo "zsad plugins does not list: $expected" >&2
    exit 1
  fi
done
"$PY" -m zsad recipes | grep -q example_mean_color || { echo "zsad recipes does not list example_mean_color" >&2; exit 1; }
echo "plugins: CLI OK"

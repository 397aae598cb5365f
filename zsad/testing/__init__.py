"""Public contract checks for backbones, prompt strategies and scoring heads (for plugin authors).

Like scikit-learn's ``check_estimator``: run the checks in your plugin's tests and every broken promise of the
contract fails with an ``AssertionError`` that says which call returned what, and what was expected.

* :func:`check_backbone`: roles, shapes, fp32 dtypes, L2 normalisation, determinism, batch independence,
  ``.to()`` moves (device and bfloat16 weights), gradients reaching learnable prompt tokens, image-size checks,
  raw text embeddings, a fixed temperature, and every declared capability (window embeddings, unprojected
  patches, layers, deep prompts) served, undeclared ones refused;
* :func:`check_prompt_strategy`: prototype shapes and normalisation, cache tokens, gradients to its tokens, the
  declared binding and token methods;
* :func:`check_prompt_training`: one prompt-learning step on the backbone updates the tokens;
* :func:`check_head`: image heads (``(B,)`` scores) and pixel heads (``(B, H, W)`` maps), monotone in p_a, given
  what they request; :func:`check_memory`: reference memories (evidence, chunking, per-class banks, save/load);
* :func:`check_export`: a detector on the backbone exports to ONNX, and ONNX Runtime / OpenVINO reproduce its
  scores and maps;
* :func:`check_predictor`: what ``zsad serve`` needs from a detector or an exported model (``predict`` on a list
  of images with one class name each, results in order at each image's size, ``config``);
* :func:`parametrize_backbones` / :func:`check_all_builtins`: run them over registered components with tiny
  random weights (:data:`TINY_OPTIONS`; a plugin factory can declare its own with a ``zsad_tiny_options``
  attribute).

Example (a plugin's test module)::

    from zsad.testing import check_backbone, check_head, parametrize_backbones

    def test_my_backbone():
        check_backbone(lambda: MyBackbone(width=8))

    @parametrize_backbones(["my_backbone"])
    def test_registered(backbone):
        check_backbone(backbone)

Example (doctest, a tiny random TIPS model):
    >>> bb = check_backbone("tips")
    >>> type(bb).__name__
    'TipsBackbone'
    >>> check_head("S5")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from zsad.testing.backbones import (
    TINY_OPTIONS,
    TINY_VARIANTS,
    check_backbone,
    tiny_backbone,
    tiny_options,
)
from zsad.testing.export import check_export
from zsad.testing.heads import check_head, check_memory
from zsad.testing.predictors import check_predictor
from zsad.testing.prompts import TINY_PROMPT_OPTIONS, check_prompt_strategy, check_prompt_training, tiny_prompts

__all__ = [
    "TINY_OPTIONS",
    "TINY_PROMPT_OPTIONS",
    "TINY_VARIANTS",
    "check_all_builtins",
    "check_backbone",
    "check_export",
    "check_head",
    "check_memory",
    "check_predictor",
    "check_prompt_strategy",
    "check_prompt_training",
    "parametrize_backbones",
    "tiny_backbone",
    "tiny_options",
    "tiny_prompts",
]


#: variants with distinct text towers, on which :func:`check_all_builtins` checks the prompt strategies
_PROMPT_VARIANTS = ("tips", "open_clip", "siglip2")


# ------------------------------------------------------------------------------------------------------------
# registries
# ------------------------------------------------------------------------------------------------------------
def parametrize_backbones(names: Iterable[str] | None = None, argname: str = "backbone"):
    """A ``pytest.mark.parametrize`` over tiny random backbones, each passed as a zero-argument factory.

    ``names`` are registered backbone names (plugins declare tiny options with ``zsad_tiny_options``); default:
    every built-in variant of :data:`TINY_VARIANTS`. Models are built inside the test, not at collection.

    Example:
        >>> mark = parametrize_backbones(["tips"])
        >>> mark.args[0], len(mark.args[1])
        ('backbone', 1)
    """
    import functools

    import pytest

    if names is None:
        params = [pytest.param(functools.partial(_build, name, options), id=test_id)
                  for test_id, (name, options) in TINY_VARIANTS.items()]
    else:  # options are looked up when the test runs: collecting imports no plugin
        params = [pytest.param(functools.partial(tiny_backbone, name), id=name) for name in names]
    return pytest.mark.parametrize(argname, params)


def _build(name: str, options: dict[str, Any]):
    from zsad.components import create_backbone

    return create_backbone(name, **options)


def _builtin_names(registry) -> list[str]:
    return [info.name for info in registry.status() if info.source == "builtin"]


def check_all_builtins(
    *, backbones: bool = True, prompts: bool = True, heads: bool = True, report: Callable[[str], None] | None = None
) -> list[str]:
    """Run the checks over every built-in backbone variant (tiny random weights), prompt strategy and head.

    Prompt strategies are checked on each distinct text tower (learnable ones where the backbone takes prompts).
    Returns the list of ``"kind:name"`` checked; the first failure raises ``AssertionError`` prefixed with it.

    Example:
        >>> "heads:S5" in check_all_builtins(backbones=False, prompts=False)
        True
    """
    from zsad.components import HEADS, PROMPTS
    from zsad.errors import ConfigError

    done: list[str] = []

    def run(label: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
        done.append(label)
        if report is not None:
            report(label)
        return result

    built = {}
    if backbones or prompts:
        for test_id, (name, options) in TINY_VARIANTS.items():
            if backbones or test_id in _PROMPT_VARIANTS:
                bb = built[test_id] = _build(name, options)
                if backbones:
                    run(f"backbones:{test_id}", lambda bb=bb: check_backbone(bb))
    if prompts:
        for strategy in _builtin_names(PROMPTS):
            for test_id in _PROMPT_VARIANTS:
                bb = built[test_id]
                made = tiny_prompts(strategy)
                try:
                    made.bind(bb)
                except ConfigError:
                    continue  # e.g. learned tokens need a text tower that takes them
                run(f"prompts:{strategy}@{test_id}", lambda made=made, bb=bb: check_prompt_strategy(made, bb))
    if heads:
        for head in _builtin_names(HEADS):
            run(f"heads:{head}", lambda head=head: check_head(head))
    return done

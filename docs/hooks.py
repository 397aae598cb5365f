"""mkdocs hook: the recipes and command-line references are generated from the code at build time.

A page holding the marker line ``<!-- zsad:recipes -->`` gets it replaced by the built-in recipes
(``zsad.list_recipes()`` / ``zsad.get_recipe()``), the recipe override names and the built-in components; a page
holding ``<!-- zsad:cli -->`` gets the help text of every ``zsad`` command (``zsad.cli.build_parser()``). So the
references cannot drift from the code: ``mkdocs build`` regenerates them every time.

Only built-in components are listed (not plugins installed in the building environment), so the pages are the
same wherever they are built.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # build from a checkout without installing zsad
    sys.path.insert(0, str(_ROOT))

RECIPES_MARKER = "<!-- zsad:recipes -->"
CLI_MARKER = "<!-- zsad:cli -->"
HELP_WIDTH = 110


def on_page_markdown(markdown: str, page, config, files) -> str:
    if RECIPES_MARKER in markdown:
        markdown = markdown.replace(RECIPES_MARKER, recipes_markdown())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    return markdown


# ---------------------------------------------------------------------------------------------------- recipes
def _cell(value) -> str:
    if value is None:
        return "—"
    if value == "":
        return '`""`'
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value) or "—"
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`" if value else "—"
    return f"`{value}`"


def _builtin(registry) -> list:
    return [info for info in registry.status() if info.source == "builtin"]


def recipes_markdown() -> str:
    from zsad.components import BACKBONES, HEADS, PROMPTS, RECIPES, get_recipe
    from zsad.config import OVERRIDE_ALIASES, DetectorConfig
    from zsad.prompts.templates import PROMPT_LISTS

    out: list[str] = []
    infos = _builtin(RECIPES)
    out.append("| recipe | description |\n|---|---|")
    out.extend(f"| [`{i.name}`](#{i.name.lower()}) | {i.description} |" for i in infos)
    out.append("")
    for info in infos:
        cfg = get_recipe(info.name)
        rows = [
            ("backbone", cfg.backbone.name),
            ("backbone checkpoint", cfg.backbone.checkpoint),
            ("backbone options", cfg.backbone.options),
            ("prompt strategy", cfg.prompts.strategy),
            ("fixed prompt list", cfg.prompts.fixed),
            ("learned prompt list", cfg.prompts.learned_list or f"{cfg.prompts.fixed} (same as fixed)"),
            ("prompt checkpoint", cfg.prompts.checkpoint),
            ("prompt tokens per state", cfg.prompts.n_tokens),
            ("image scores computed", list(cfg.heads.image_heads)),
            ("`pred_score`", cfg.heads.image_score),
            ("pixel head", cfg.heads.pixel),
            ("map smoothing sigma", cfg.heads.sigma),
            ("input size", cfg.preprocess.image_size),
            ("resize filter", cfg.preprocess.resample or "the backbone's"),
            ("batch size", cfg.batch_size),
        ]
        out.append(f"## {info.name}\n")
        out.append(f"{cfg.description}\n")
        out.append("| setting | value |\n|---|---|")
        out.extend(f"| {k} | {_cell(v)} |" for k, v in rows)
        out.append(f"\n```python\nDetector.from_recipe(\"{info.name}\")\n```\n")
        out.append(f'??? note "The recipe document (`zsad recipes {info.name}`)"\n')
        doc = cfg.model_dump_json(indent=2)
        out.append("    ```json\n" + "\n".join("    " + line for line in doc.splitlines()) + "\n    ```\n")

    out.append("## Overrides\n")
    out.append(
        "Any field can be overridden when a detector is built: `Detector.from_recipe(name, **overrides)` in Python, "
        "`--set key=value` on the command line (values are parsed as JSON when they parse: `336`, `true`, `null`). "
        "The flat names below map onto the recipe document; dotted paths (`heads.sigma`, "
        "`backbone.options.dense_readout`) work too.\n"
    )
    out.append("| override | field | default | meaning |\n|---|---|---|---|")
    defaults = DetectorConfig()
    for alias, path in OVERRIDE_ALIASES.items():
        section, _, field = path.partition(".")
        model = getattr(defaults, section)
        field, _, option = field.partition(".")
        if option:  # an option of a component (e.g. heads.options.pixel_map.layers): the component documents it
            owner, _, name = option.rpartition(".")
            desc = f"the `{name}` option of the {f'`{owner}` head' if owner else section}, set by the recipes that use it"
            out.append(f"| `{alias}` | `{path}` | (component default) | {desc} |")
            continue
        desc = type(model).model_fields[field].description or ""
        out.append(f"| `{alias}` | `{path}` | {_cell(getattr(model, field))} | {desc} |")
    for field in ("name", "description", "batch_size"):
        desc = DetectorConfig.model_fields[field].description or ""
        out.append(f"| `{field}` | `{field}` | {_cell(getattr(defaults, field))} | {desc} |")
    out.append("")

    out.append("## Built-in components\n")
    for title, registry in (("Backbones", BACKBONES), ("Prompt strategies", PROMPTS), ("Heads", HEADS)):
        out.append(f"**{title}** (`zsad.list_{registry.kind}()`)\n")
        out.append("| name | description |\n|---|---|")
        out.extend(f"| `{i.name}` | {i.description} |" for i in _builtin(registry))
        out.append("")
    out.append("**Prompt lists** (`fixed_prompts=...`, `learned_prompts=...`)\n")
    out.append("| name | sentences (normal / abnormal) | description |\n|---|---|---|")
    for name, lst in PROMPT_LISTS.items():
        normal, abnormal = lst.sentences("object")
        out.append(f"| `{name}` | {len(normal)} / {len(abnormal)} | {lst.description} |")
    out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------------- CLI
def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_markdown() -> str:
    from zsad.cli import build_parser

    parser = build_parser()
    out = ["## zsad\n", "```text\n" + _help(parser) + "\n```\n"]

    def walk(p: argparse.ArgumentParser, level: int) -> None:
        for _name, sub in _subcommands(p):
            out.append(f"{'#' * level} {sub.prog}\n")
            out.append("```text\n" + _help(sub) + "\n```\n")
            walk(sub, level + 1)

    walk(parser, 2)
    return "\n".join(out)

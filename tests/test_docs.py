"""The documentation's code runs: every ```python block of docs/**/*.md and README.md, against tiny models.

Conventions for documentation writers:

* **Python blocks run.** The ```python blocks of a page run in order, in one namespace per page (a block may use
  names an earlier block of the same page defined). Other blocks (bash, text, toml, json) are not executed, but
  every ``zsad ...`` command line of a ```bash block is parsed with ``zsad.cli.build_parser()``, so the options the
  docs show must exist.
* **Skipping.** A python block that cannot run in the test suite (it needs real weights, a GPU or a dataset
  download) is marked by an HTML comment, with a reason, on the line right before its fence::

      <!-- skip: needs real weights -->
      ```python

  Keep such blocks few: prefer writing the example so that the tiny model below can run it.
* **Tiny models.** While a page runs, every :class:`zsad.Detector` that is built (``from_recipe``,
  ``from_config``, ``load``, and the detectors ``evaluate()`` and ``train_prompts()`` build) is built on the CPU,
  in float32, at a 56-pixel input size, with the parity fixture's tiny TIPS checkpoint in place of a named TIPS
  checkpoint (``tips-v1-l14-hr``, ...) and the fixture's prompt tokens in place of the built-in ``tipsomaly-mvtec``
  / ``tipsomaly-visa``. Local files a page itself wrote (trained prompts, saved recipes) are used as they are. So
  the docs can write ``Detector.from_recipe("tipsomaly", device="cuda", dtype="bfloat16")`` exactly as a user
  would, and the test runs it on the tiny model.
* **Files.** Each page runs in its own scratch working directory holding ``part.png`` (an example image),
  ``examples/images/`` (the repository's three example images), ``good/`` (three normal images) and
  ``data/mvtec``, ``data/visa`` (the parity fixture's tiny meta.json dataset: classes ``metal_nut`` and
  ``pipe_fryum``). Pages write their outputs under ``runs/`` there.
* **Registrations** a page makes (``register_head``, ``register_recipe``, ``register_prompt_list``, ...) are undone
  after the page.
* **Files.** A block with a title (```` ```python title="pkg/src/pkg/mod.py" ````, any language) is a file the
  reader creates: it is written under that path in the page's working directory, not run. A page whose files
  include a ``pyproject.toml`` with entry points (the plugin tutorial) gets that package installed for the rest
  of the page, as ``pip install`` would (``tests/plugin_packages.py``); ``tests/test_plugin_tutorial.py``
  installs it with pip for real.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tips_factory import FIXTURE

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md")) + ["README.md"]

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[^`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass
class Block:
    language: str
    code: str
    line: int  # 1-based line of the first code line
    skip: str | None
    title: str | None = None  # a file the reader creates (```lang title="path")


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented to their fence."""
    lines = (ROOT / page).read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m["indent"])
        info = m["info"].strip()
        language = info.split()[0] if info else ""
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = _SKIP.match(prev)
        body = []
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            body.append(lines[j][indent:])
            j += 1
        assert j < len(lines), f"{page}:{i + 1}: unclosed code fence"
        title = re.search(r'title="([^"]+)"', info)
        found.append(Block(language, "\n".join(body) + "\n", i + 2, skip["reason"] if skip else None,
                           title[1] if title else None))
        i = j + 1
    return found


# ------------------------------------------------------------------------------------------------ tiny models
def tiny_config(config):
    """The configuration a page's detector gets in the tests (see the module docstring)."""
    from zsad.prompts.checkpoint import BUILTIN_PROMPTS

    overrides: dict = {"image_size": 56}
    ckpt = config.backbone.checkpoint
    if config.backbone.name == "open_clip" and ckpt == "ViT-L-14-336:openai" and "dpam_start" in config.backbone.options:
        return _tiny_anomalyclip(config, overrides)
    if ckpt is not None and not Path(ckpt).exists():
        if config.backbone.name in ("open_clip", "siglip2"):
            raise AssertionError(
                f"A docs page builds the {config.backbone.name} backbone from {ckpt!r}; extend tests/test_docs.py's "
                "tiny_config for it or mark the block <!-- skip: needs real weights -->."
            )
        overrides["backbone_checkpoint"] = str(FIXTURE)  # TIPS, or a wrapper around it (the plugin tutorial)
    if config.prompts.checkpoint in BUILTIN_PROMPTS:
        overrides["prompt_checkpoint"] = str(FIXTURE / "learnable_params.pth")
    return config.with_overrides(**overrides)


def _tiny_anomalyclip(config, overrides: dict):
    """The anomalyclip recipe on its parity fixture's tiny CLIP (4 vision blocks: DPAM from block 2, layers <= 4)."""
    fixture = ROOT / "tests" / "fixtures" / "anomalyclip-parity"
    options = {**config.backbone.options, "dpam_start": 2,
               "model_config": json.loads((fixture / "model_config.json").read_text())}
    overrides.update({"backbone_checkpoint": str(fixture / "clip.pt"), "backbone.options": options})
    layers = config.heads.options.get("pixel_map", {}).get("layers")
    if layers:
        overrides["feature_layers"] = sorted({min(4, max(1, int(i) // 6)) for i in layers})
    if config.prompts.checkpoint in ("anomalyclip-visa", "anomalyclip-mvtec"):
        overrides["prompt_checkpoint"] = str(fixture / "prompt_learner.pth")
    return config.with_overrides(**overrides)


@pytest.fixture
def tiny_detectors(monkeypatch):
    from zsad.detector import Detector

    real_init = Detector.__init__

    def init(self, config, *, device=None, dtype=None, backbone=None, **runtime):
        real_init(self, tiny_config(config), device="cpu", dtype=None, backbone=backbone, **runtime)

    monkeypatch.setattr(Detector, "__init__", init)


@pytest.fixture
def restore_registries():
    from zsad.components import all_registries
    from zsad.prompts.templates import PROMPT_LISTS

    saved = [(reg, dict(reg._items), dict(reg._descriptions)) for reg in all_registries()]
    lists = dict(PROMPT_LISTS)
    yield
    for reg, items, descriptions in saved:
        reg._items.clear()
        reg._items.update(items)
        reg._descriptions.clear()
        reg._descriptions.update(descriptions)
    PROMPT_LISTS.clear()
    PROMPT_LISTS.update(lists)


@pytest.fixture(scope="module")
def shared_files(tmp_path_factory):
    """Read-only inputs every page may use (linked into each page's working directory)."""
    root = tmp_path_factory.mktemp("docs-inputs")
    shutil.copytree(ROOT / "examples" / "images", root / "examples" / "images")
    shutil.copy(ROOT / "examples" / "images" / "metal_plate_scratch.png", root / "part.png")
    good = np.asarray(Image.open(ROOT / "examples" / "images" / "metal_plate_good.png").convert("RGB"))
    (root / "good").mkdir()
    for i, variant in enumerate((good, good[:, ::-1], good[::-1])):
        Image.fromarray(np.ascontiguousarray(variant)).save(root / "good" / f"good_{i}.png")
    return root


@pytest.fixture
def workdir(shared_files, tmp_path, monkeypatch):
    for name in ("examples", "good", "part.png"):
        (tmp_path / name).symlink_to(shared_files / name)
    (tmp_path / "data").mkdir()
    for name in ("mvtec", "visa"):
        (tmp_path / "data" / name).symlink_to(FIXTURE / "dataset")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------------------------ tests
def write_files(page: str, folder: Path) -> list[Path]:
    """Write the titled blocks of *page* under *folder*; return the folders holding a written pyproject.toml."""
    projects = []
    for block in blocks(page):
        if block.title:
            path = folder / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
            if path.name == "pyproject.toml":
                projects.append(path.parent)
    return projects


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language == "python" for b in blocks(p))])
def test_python_blocks_run(page, workdir, tiny_detectors, restore_registries):
    from contextlib import ExitStack

    from plugin_packages import installed

    runnable = [b for b in blocks(page) if b.language == "python" and not b.title]
    namespace: dict = {"__name__": "__docs__"}
    projects = write_files(page, workdir)
    packages = tuple(p.name for project in projects for p in (project / "src").glob("*") if p.is_dir())
    with warnings.catch_warnings(), ExitStack() as stack:
        warnings.simplefilter("ignore")  # e.g. "untrained prompts" while a page trains its own
        if projects:
            stack.enter_context(installed(workdir / ".site", projects, packages))
        for block in runnable:
            if block.skip:
                continue
            code = "\n" * (block.line - 1) + block.code  # tracebacks show the page's own line numbers
            exec(compile(code, str(ROOT / page), "exec"), namespace)  # noqa: S102 - the docs' own examples


def _command_lines(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # comments
        for part in re.split(r"&&|\|\||\||;", line):
            part = part.strip()
            if part.startswith("do "):
                part = part[3:].strip()
            if part.startswith("zsad "):
                commands.append(part)
    return commands


def _cli_cases() -> list:
    cases = []
    for page in PAGES:
        for block in blocks(page):
            if block.language in ("bash", "sh", "shell", "console"):
                cases += [pytest.param(cmd, id=f"{page}:{block.line}") for cmd in _command_lines(block.code)]
    return cases


@pytest.mark.parametrize("command", _cli_cases())
def test_cli_lines_parse(command):
    from zsad.cli import build_parser

    argv = shlex.split(command, comments=True)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`{command}` does not parse (exit {exc.code}); fix the docs or the command line")
    assert callable(args.func)


def test_skip_markers_have_reasons_and_are_few():
    skipped = [(page, b.line, b.skip) for page in PAGES for b in blocks(page) if b.skip]
    runnable = [b for page in PAGES for b in blocks(page) if b.language == "python"]
    assert len(skipped) <= max(3, len(runnable) // 5), f"too many skipped blocks: {skipped}"
    for page in PAGES:
        text = (ROOT / page).read_text()
        for m in re.finditer(r"<!--\s*skip\b[^>]*-->", text):
            assert _SKIP.match(m.group(0)), f"{page}: skip marker without a reason: {m.group(0)}"


def test_api_pages_name_existing_objects():
    import importlib

    for page in sorted((DOCS / "api").glob("*.md")):
        for target in re.findall(r"^:::\s*([\w.]+)", page.read_text(), flags=re.MULTILINE):
            parts = target.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
                break
            else:
                pytest.fail(f"{page.name}: `::: {target}` names nothing importable")


def test_nav_lists_every_page_and_only_existing_ones():
    yaml = pytest.importorskip("yaml")  # installed with mkdocs (the docs extra)

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # mkdocs' !!python/name tags
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    nav = set(walk(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == pages, f"in nav but missing: {sorted(nav - pages)}; pages not in nav: {sorted(pages - nav)}"


def test_generated_references_cover_recipes_and_commands():
    import importlib.util

    from zsad import list_recipes
    from zsad.cli import build_parser
    from zsad.components import RECIPES

    spec = importlib.util.spec_from_file_location("zsad_docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    recipes = hooks.recipes_markdown()
    builtin = [i.name for i in RECIPES.status() if i.source == "builtin"]
    assert "tipsomaly" in builtin and set(builtin) <= set(list_recipes())
    for name in builtin:
        assert f"## {name}\n" in recipes
    assert "| `image_size` | `preprocess.image_size` |" in recipes
    cli = hooks.cli_markdown()
    for name in next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices:
        assert f"## zsad {name}\n" in cli
    assert "### zsad data prepare\n" in cli


def test_docstring_rendering_extension():
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location("zsad_griffe_docstrings", DOCS / "griffe_docstrings.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    doc = (
        "See :class:`~zsad.results.AnomalyResult` and :func:`zsad.data.open_dataset`.\n\n"
        "=====  =========\nname   meaning\n=====  =========\n``a``  first\n       continued\n``b``  second\n"
        "=====  =========\n\n"
        "Example (tiny model):\n    >>> 1 + 1  # doctest: +SKIP\n    2\n\n"
        "Example (a test)::\n\n    def test():\n        pass\n"
    )
    out = ext.rewrite(doc)
    assert "See `AnomalyResult` and `zsad.data.open_dataset`." in out
    assert "| name | meaning |\n|---|---|\n| ``a`` | first continued |\n| ``b`` | second |" in out
    assert "Example: tiny model\n    ```pycon\n    >>> 1 + 1\n    2\n    ```" in out
    assert "Example: a test\n    ```python\n    def test():\n        pass\n    ```" in out


def test_reliability_page_names_existing_tests():
    text = (DOCS / "reliability.md").read_text()
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    files = set(re.findall(r"tests/[\w/]+\.py", text))
    names = set(re.findall(r"\b(test_\w+)\b", re.sub(r"tests/[\w/]+\.py", "", text)))
    assert files and names
    for f in sorted(files):
        assert (ROOT / f).is_file(), f"reliability.md names {f}, which does not exist"
    for name in sorted(names):
        assert re.search(rf"^\s*def {name}\(", sources, re.M), f"reliability.md names {name}, which is no test"


def test_the_docs_extra_formats_signatures():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith(("ruff", "black")) for dep in extras["docs"]), "mkdocstrings formats signatures with them"

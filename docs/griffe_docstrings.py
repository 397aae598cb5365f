"""Griffe extension: render zsad's docstrings (Google style with doctest examples and a few reST habits) well.

* ``>>>`` doctest runs become fenced ``pycon`` code blocks (Markdown would otherwise reflow them as prose), without
  their ``# doctest:`` flags;
* ``Example (some title):`` headers become ``Example: some title`` admonitions;
* a paragraph ending in ``::`` (a reST literal block) ends in ``:`` and its indented block becomes a fenced block;
* Sphinx roles (``:class:`~zsad.results.AnomalyResult```) become inline code (``AnomalyResult``);
* reST simple tables (``====  ====`` borders) become Markdown tables.

Only the rendered text changes; the docstrings (and their doctests) stay as they are in the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_TITLED_EXAMPLE = re.compile(r"^(?P<indent>\s*)Example\s*\((?P<title>.*)\)(?P<colons>::?)\s*$")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")
_DOCTEST_FLAGS = re.compile(r"\s*#\s*doctest:.*$")
_BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match) -> str:
    target = match["target"]
    return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"


def _literal_language(block: list[str], titled_example: bool) -> str:
    text = "\n".join(block)
    if "[project" in text or "[tool." in text:
        return "toml"
    return "python" if titled_example else ""


def _table(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """A reST simple table starting at ``lines[start]`` as Markdown lines, and the index after it."""
    columns = [m.start() for m in re.finditer(r"=+", lines[start])]
    borders = [start]
    j = start + 1
    while j < len(lines) and lines[j].strip():
        if _BORDER.match(lines[j]):
            borders.append(j)
        j += 1
    if len(borders) not in (2, 3) or borders[-1] != j - 1:
        return None

    def cells(line: str) -> list[str]:
        bounds = columns[1:] + [len(line)]
        return [line[a:b].strip().replace("|", "\\|") for a, b in zip(columns, bounds)]

    def rows(first: int, last: int) -> list[list[str]]:
        out: list[list[str]] = []
        for line in lines[first:last]:
            row = cells(line)
            if out and not row[0]:  # a continuation line
                out[-1] = [f"{a} {b}".strip() for a, b in zip(out[-1], row)]
            else:
                out.append(row)
        return out

    header = rows(borders[0] + 1, borders[1])[0] if len(borders) == 3 else [""] * len(columns)
    body = rows(borders[-2] + 1, borders[-1])
    pad = lines[start][: _indent(lines[start])]
    md = [pad + "| " + " | ".join(header) + " |", pad + "|" + "---|" * len(columns)]
    md += [pad + "| " + " | ".join(row) + " |" for row in body]
    return md, j


def rewrite(text: str) -> str:
    """The Markdown-friendly form of one docstring (see the module docstring)."""
    lines = [_ROLE.sub(_role, line) for line in text.splitlines()]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        table = _table(lines, i) if _BORDER.match(line) else None
        if table is not None:
            if out and out[-1].strip():
                out.append("")
            out.extend(table[0])
            i = table[1]
            continue
        if stripped.startswith(">>>"):
            pad = line[: _indent(line)]
            out.append(pad + "```pycon")
            while i < len(lines) and lines[i].strip() and lines[i].startswith(pad):
                out.append(_DOCTEST_FLAGS.sub("", lines[i]))
                i += 1
            out.append(pad + "```")
            continue
        titled = _TITLED_EXAMPLE.match(line)
        literal = stripped.endswith("::")
        if titled:
            line = f"{titled['indent']}Example: {titled['title'].strip()}"
        elif literal:
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
        if not (literal or (titled and titled["colons"] == "::")):
            continue
        # a reST literal block: the following lines indented deeper than the paragraph
        base = _indent(lines[i - 1])
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or _indent(lines[j]) <= base:
            continue
        end = j
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        while end > j and not lines[end - 1].strip():
            end -= 1
        block = lines[j:end]
        pad = " " * (base + (4 if titled else 0))
        inner = min(_indent(b) for b in block if b.strip())
        if not titled:  # (an admonition's body must follow its title line directly)
            out.append("")
        out.append(pad + "```" + _literal_language(block, bool(titled)))
        out.extend(pad + b[inner:] if b.strip() else "" for b in block)
        out.append(pad + "```")
        i = end
    return "\n".join(out)


class ZsadDocstrings(griffe.Extension):
    """Apply :func:`rewrite` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

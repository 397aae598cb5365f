"""Prompt lists as data: state phrases and templates, expanded into sentences.

A prompt list has normal states, abnormal states and templates. For state ``s`` (outer loop) and template ``t``
(inner loop) the sentence is ``t.format(s.format(class_name))`` — the official Tipsomaly order.

* ``industrial``: the 4-template lists the released Tipsomaly prompts were trained with (official HEAD).
* ``industrial_paper``: the 8-template lists of the paper-era evaluation runs.
* ``medical``: paper Table 5 (HeadCT, BrainMRI, Br35H).
* ``winclip``: WinCLIP's compositional prompt ensemble (anomalib 2.7.0).
* ``object_agnostic``: the AnomalyCLIP-style pair ``"{}"`` / ``"damaged {}"``.
* ``anomalyclip``: AnomalyCLIP's own sentences ``"{}."`` / ``"damaged {}."`` (placed after its learned contexts).

Example:
    >>> lst = get_prompt_list("industrial")
    >>> normal, abnormal = lst.sentences("metal nut")
    >>> len(normal), len(abnormal), normal[4]
    (28, 20, 'a bad photo of a flawless metal nut.')
    >>> normalize_class_name("pipe_fryum"), normalize_class_name("Blotchy-099")
    ('pipe fryum', 'Blotchy 099')
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from zsad.errors import ConfigError, UnknownComponentError

__all__ = [
    "PromptList", "PROMPT_LISTS", "get_prompt_list", "normalize_class_name", "check_class_name", "register_prompt_list",
]


@dataclass(frozen=True)
class PromptList:
    """Normal and abnormal state phrases and the templates they are placed in."""

    name: str
    normal_states: tuple[str, ...]
    abnormal_states: tuple[str, ...]
    templates: tuple[str, ...]
    description: str = ""

    def sentences(self, class_name: str) -> tuple[list[str], list[str]]:
        """``(normal sentences, abnormal sentences)`` for a (normalised) class name."""
        expand = lambda states: [t.format(s.format(class_name)) for s in states for t in self.templates]  # noqa: E731
        return expand(self.normal_states), expand(self.abnormal_states)


def normalize_class_name(name: str) -> str:
    """Class name as the official code puts it in prompts: ``_`` and ``-`` become spaces.

    (The TIPS tokenizer lowercases, so case does not matter for TIPS.) A name that is not a non-empty string
    raises :class:`~zsad.errors.ConfigError` (see :func:`check_class_name`).
    """
    return check_class_name(name).replace("_", " ").replace("-", " ")


def check_class_name(name: object) -> str:
    """*name* if it is a usable class name (a string with a letter or digit), else :class:`~zsad.errors.ConfigError`.

    Example:
        >>> check_class_name("metal_nut")
        'metal_nut'
        >>> try:
        ...     check_class_name(b"screw")
        ... except ConfigError as e:
        ...     print(str(e).split(";")[0])
        class_name must be a string such as 'metal nut', got b'screw' (bytes) (decode it: name.decode())
    """
    if not isinstance(name, str):
        fix = " (decode it: name.decode())" if isinstance(name, (bytes, bytearray)) else ""
        raise ConfigError(
            f"class_name must be a string such as 'metal nut', got {name!r} ({type(name).__name__}){fix}; give "
            "one name for all images or a list with one name per image."
        )
    if not any(ch.isalnum() for ch in name):
        raise ConfigError(
            f"class_name {name!r} names nothing: the prompts would describe an empty object. Give the object's "
            "name, e.g. 'metal nut' or 'object' when you do not know it."
        )
    return name


_INDUSTRIAL_NORMAL = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
_INDUSTRIAL_ABNORMAL = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")

PROMPT_LISTS: dict[str, PromptList] = {}


def register_prompt_list(prompt_list: PromptList, *, override: bool = False) -> PromptList:
    """Add a prompt list under its name (refused if taken, unless ``override=True``)."""
    if prompt_list.name in PROMPT_LISTS and not override:
        raise ValueError(f"Prompt list '{prompt_list.name}' exists; pass override=True to replace it.")
    PROMPT_LISTS[prompt_list.name] = prompt_list
    return prompt_list


def get_prompt_list(name: str) -> PromptList:
    """The prompt list registered under *name*, with close-match suggestions for unknown names."""
    try:
        return PROMPT_LISTS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), PROMPT_LISTS, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownComponentError(
            f"Unknown prompt list {name!r}.{hint} Known prompt lists: {', '.join(sorted(PROMPT_LISTS))}."
        ) from None


register_prompt_list(
    PromptList(
        "industrial",
        _INDUSTRIAL_NORMAL,
        _INDUSTRIAL_ABNORMAL,
        (
            "a bad photo of a {}.",
            "a low resolution photo of the {}.",
            "a bad photo of the {}.",
            "a cropped photo of the {}.",
        ),
        "Generic industrial prompts, 4 templates (the lists the released Tipsomaly prompts were trained with).",
    )
)
register_prompt_list(
    PromptList(
        "industrial_paper",
        _INDUSTRIAL_NORMAL,
        _INDUSTRIAL_ABNORMAL,
        (
            "a photo of a {}.",
            "a photo of the {}.",
            "a cropped photo of a {}.",
            "a cropped photo of the {}.",
            "a close-up photo of a {}",
            "a close-up photo of the {}",
            "a photo of the {} for visual inspection",
            "a photo of a {} for visual inspection",
        ),
        "Generic industrial prompts, 8 templates (the paper-era Tipsomaly evaluation lists).",
    )
)
register_prompt_list(
    PromptList(
        "medical",
        (
            "normal {}",
            "intact {}",
            "{} with uniform structure",
            "{} showing clear tissue",
            "{} with normal anatomy",
            "{} showing no distortion",
            "{} with symmetric appearance",
            "{} looking normal",
            "{} with even texture",
            "{} with regular shape",
        ),
        (
            "abnormal {}",
            "{} with spot",
            "{} with abnormality",
            "diseased {}",
            "{} showing distortion",
            "{} with irregular area",
            "{} with irregular shape",
            "{} with uneven texture",
        ),
        (
            "a medical image of a {}.",
            "a medical image of the {}.",
            "a diagnostic scan of a {}.",
            "a diagnostic scan of the {}.",
            "a slice showing a {}.",
            "a slice showing the {}.",
            "a scan of the {}.",
            "a clinical brain scan of a {}.",
        ),
        "Medical prompts of the Tipsomaly paper (Table 5), the default for HeadCT, BrainMRI and Br35H.",
    )
)
register_prompt_list(
    PromptList(
        "winclip",
        _INDUSTRIAL_NORMAL,
        ("damaged {}", "{} with flaw", "{} with defect", "{} with damage"),
        (
            "a cropped photo of the {}.",
            "a close-up photo of a {}.",
            "a close-up photo of the {}.",
            "a bright photo of a {}.",
            "a bright photo of the {}.",
            "a dark photo of the {}.",
            "a dark photo of a {}.",
            "a jpeg corrupted photo of the {}.",
            "a jpeg corrupted photo of the {}.",
            "a blurry photo of the {}.",
            "a blurry photo of a {}.",
            "a photo of a {}.",
            "a photo of the {}.",
            "a photo of a small {}.",
            "a photo of the small {}.",
            "a photo of a large {}.",
            "a photo of the large {}.",
            "a photo of the {} for visual inspection.",
            "a photo of a {} for visual inspection.",
            "a photo of the {} for anomaly detection.",
            "a photo of a {} for anomaly detection.",
        ),
        "WinCLIP's compositional ensemble as in anomalib 2.7.0: 7 normal and 4 anomalous states (no 'broken'), 21 "
        "templates ('a jpeg corrupted photo of the {}.' listed twice, both used): 147 + 84 sentences.",
    )
)
register_prompt_list(
    PromptList(
        "object_agnostic",
        ("{}",),
        ("damaged {}",),
        ("{}",),
        "The AnomalyCLIP-style object-agnostic pair: '{}' / 'damaged {}'.",
    )
)
register_prompt_list(
    PromptList(
        "anomalyclip",
        ("{}",),
        ("damaged {}",),
        ("{}.",),
        "AnomalyCLIP's object-agnostic sentences after the learned contexts: '{}.' / 'damaged {}.' (class word "
        "'object').",
    )
)

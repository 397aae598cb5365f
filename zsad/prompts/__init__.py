"""Prompt strategies: fixed lists, learnable prompt tokens, and the decoupled combination of both.

A strategy gives two kinds of ``[normal, abnormal]`` text prototypes through the backbone contract:
*global* ones for the image score (``(C, 2, D)``, one pair per class) and *local* ones for the pixel map
(``(C, 2, D)`` or ``(1, 2, D)`` when class-agnostic). Prompt lists are data in :mod:`zsad.prompts.templates`.
"""

from zsad.prompts.templates import (
    PROMPT_LISTS,
    PromptList,
    get_prompt_list,
    normalize_class_name,
)

__all__ = ["PROMPT_LISTS", "PromptList", "get_prompt_list", "normalize_class_name"]

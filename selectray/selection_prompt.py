"""SelectLLM's selection prompt and answer parser: pure text functions, no Ray, no model."""

from __future__ import annotations

import re

CRITERIA = (
    "complexity and depth: it calls for reasoning or several steps, not a one-line lookup",
    "topic diversity: it covers ground the other picks are unlikely to cover",
    "clarity and specificity: a competent annotator knows exactly what is asked",
    "real-world relevance: people actually need this done",
    "instructional value: a model learns a transferable skill from its answer",
)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def selection_prompt(candidates: list[tuple[str, str | None]], picks: int, *, max_chars: int = 600) -> str:
    """The rater's task for one group: numbered candidates [1]..[r], the criteria, the answer format.

    `candidates` are (instruction, input) pairs; long texts are clipped to `max_chars`
    so that a group always fits a small model's context.
    """
    n = len(candidates)
    lines = [
        f"Below are {n} unannotated instructions, each marked with a number in brackets. "
        "They are candidates for a human to annotate for instruction-tuning a language model.",
        "",
    ]
    for i, (instruction, context) in enumerate(candidates, 1):
        lines.append(f"[{i}] {_clip(instruction, max_chars)}")
        if context:
            lines.append(f"    Input: {_clip(context, max_chars)}")
    lines += ["", f"Select the {picks} instruction{'s' if picks > 1 else ''} most worth annotating. Prefer:"]
    lines += [f"- {c}" for c in CRITERIA]
    example = ", ".join(str(i) for i in range(1, picks + 1))
    lines += [
        "",
        f"Answer with the identifier{'s' if picks > 1 else ''} only, in brackets, for example [{example}].",
    ]
    return "\n".join(lines)


def completion_suffix(picks: int) -> str:
    """Appended to the prompt of a model without a chat template, to start its answer."""
    return f"\n\nThe {picks} most valuable instruction{'s' if picks > 1 else ''} (identifiers only): ["


_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(r"(?<![\d.])\d{1,6}(?![\d.]*\d)")


def parse_selection(text, num_candidates: int, picks: int) -> list[int]:
    """0-based indices of the candidates an answer names; never raises.

    Accepts `[3]`, `[3, 7]`, `[3][7]`, `3, 7` and prose around them. Numbers inside
    brackets win when there are any (prose may mention other numbers); otherwise
    every standalone number counts. Out-of-range and repeated ids are dropped, and
    at most `picks` are returned, in the order the answer gives them.
    """
    if not isinstance(text, str) or num_candidates <= 0 or picks <= 0:
        return []
    groups = _BRACKETED.findall(text)
    source = " ".join(groups) if any(_NUMBER.search(g) for g in groups) else text
    out: list[int] = []
    for match in _NUMBER.finditer(source):
        k = int(match.group()) - 1
        if 0 <= k < num_candidates and k not in out:
            out.append(k)
            if len(out) == picks:
                break
    return out

"""Prompt text for the rater LLMs, and the lookup of rating tokens (pure: no model, no I/O).

SelectIT (docs/methods.md, "SelectIT") asks a model to rate an instruction-response pair with K rating
prompts and reads the next-token probabilities of "1".."5". Two layouts:

* ``paper`` (default), the paper's order::

      {rating prompt}\\nInstruction: {instruction}[\\n{input}]\\nResponse: {output}\\nThe answer is:␣

* ``sample-first``: the row first, so the K prompts of a row share a prefix whose
  attention keys/values are computed once (KV reuse in transformers, prefix caching
  in vLLM)::

      Instruction: {instruction}[\\n{input}]\\nResponse: {output}\\n{rating prompt}\\nThe answer is:␣

(␣: the prompt ends with one space.)

Every prompt is returned as a (prefix, suffix) pair of strings; the model sees the
token ids of ``prefix`` followed by those of ``suffix`` (each tokenized on its own),
so the shared prefix has the same tokens in all K prompts of a row.

SelectLLM (docs/methods.md, "SelectLLM") shows a rater numbered candidates [1]..[r] and asks for the most
beneficial ones: `selection_prompt` builds that prompt and `parse_selection` reads the
answer back, robustly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from selectray.errors import ConfigError

# The project's own K=5 paraphrases of "rate how well the response follows the
# instruction, 1 to 5, answer with the number" (SelectIT's released prompts are not reused).
# Kept short (~20 tokens): every token of them is computed K times per row.
RATING_PROMPTS: tuple[str, ...] = (
    "Rate how well the response follows the instruction, from 1 (poor) to 5 (excellent). "
    "Answer with the number.",
    "On a scale of 1 to 5, how well does the response carry out the instruction? Reply with one number.",
    "Score the quality of the response to this instruction from 1 to 5. Give only the number.",
    "How fully does the response fulfil the instruction? Rate it from 1 to 5 and answer with the digit.",
    "Grade the response against the instruction on a scale of 1 to 5. Answer with a single number.",
)

LAYOUTS = ("paper", "sample-first")
ANSWER_CUE = "The answer is: "
# Part of the score-cache key: bump when the rating prompt template changes.
TEMPLATE_VERSION = 1
RATING_DIGITS = ("1", "2", "3", "4", "5")


def format_sample(instruction: str, input: str | None, output: str) -> str:
    """The row part of a rating prompt: ``Instruction: ...[\\n{input}]\\nResponse: ...``.

    An empty or missing ``input`` adds nothing (no blank line).
    """
    context = f"\n{input}" if input else ""
    return f"Instruction: {instruction}{context}\nResponse: {output}"


def build_rating_prompt(
    rating_prompt: str, instruction: str, input: str | None, output: str, layout: str = "paper"
) -> tuple[str, str]:
    """One SelectIT prompt as ``(prefix, suffix)``; ``prefix + suffix`` is the full text.

    For ``paper`` the prefix is empty (nothing is shared between the K prompts); for
    ``sample-first`` the prefix is the row (instruction, input, response) and the suffix
    the rating prompt and answer cue.
    """
    sample = format_sample(instruction, input, output)
    match layout:
        case "paper":
            return "", f"{rating_prompt}\n{sample}\n{ANSWER_CUE}"
        case "sample-first":
            return f"{sample}\n", f"{rating_prompt}\n{ANSWER_CUE}"
        case _:
            raise ConfigError(f"unknown prompt layout {layout!r}; valid: {', '.join(LAYOUTS)}")


def check_rating_prompts(prompts: Sequence[str] | None) -> tuple[str, ...]:
    """The rating prompts to use: the built-in K=5 when ``prompts`` is None, else validated."""
    if prompts is None:
        return RATING_PROMPTS
    prompts = tuple(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError("rating prompts must be a non-empty list of non-empty strings")
    if len(set(prompts)) != len(prompts):
        raise ConfigError("rating prompts must be distinct")
    return prompts


@dataclass(frozen=True)
class RatingTokens:
    """Token ids of the ratings "1".."5" for one tokenizer.

    ``ids[i]`` is the token the model emits for rating i+1 right after the answer cue
    ``"The answer is: "``. ``form`` says which spelling it is: ``"bare"`` (the digit
    token alone; the cue's trailing space is its own token, as in SmolLM2 and Gemma 3)
    or ``"spaced"`` (a digit token carrying the space or word-start marker, e.g. GPT-2's
    "Ġ1"; the cue's trailing space is then dropped from the prompt so that it is not
    tokenized twice, see ``strip_cue_space``).
    """

    ids: tuple[int, ...]
    form: str
    tokens: tuple[str, ...] = ()

    @property
    def strip_cue_space(self) -> bool:
        """Whether prompts must end with ``"The answer is:"`` (no space) for these ids."""
        return self.form == "spaced"


class RatingTokenError(ConfigError):
    """The tokenizer cannot express the ratings "1".."5" as single tokens."""


def find_rating_tokens(tokenizer, cue: str = ANSWER_CUE) -> RatingTokens:
    """Look up the single-token ids of "1".."5" that follow ``cue`` for ``tokenizer``.

    Both spellings are considered, in this order:

    1. bare digit: ``encode(cue + d) == encode(cue) + [id]`` (the cue's trailing
       space stays a token of its own and the digit follows it);
    2. spaced digit: ``encode(cue' + " " + d) == encode(cue') + [id]`` with
       ``cue' = cue.rstrip()``: one token holds the space (or "▁") and the digit.

    The five ids must be distinct and none may be the unknown token. Raises
    RatingTokenError naming the tokenizer otherwise. ``tokenizer`` is any Hugging Face
    tokenizer (only ``encode(text, add_special_tokens=False)`` is used).
    """

    def enc(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    unk = getattr(tokenizer, "unk_token_id", None)
    failures = []
    for form, head, sep in (("bare", cue, ""), ("spaced", cue.rstrip(), " ")):
        base = enc(head)
        ids = []
        for d in RATING_DIGITS:
            extra = enc(head + sep + d)
            extra = extra[len(base) :] if extra[: len(base)] == base else extra
            if len(extra) != 1 or extra[0] == unk:
                failures.append(f"{form} {d!r} -> {extra}")
                break
            ids.append(int(extra[0]))
        if len(ids) == 5 and len(set(ids)) == 5:
            return RatingTokens(ids=tuple(ids), form=form, tokens=tuple(map(str, tokenizer.convert_ids_to_tokens(ids))))
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise RatingTokenError(
        f"tokenizer {name!r} cannot express the ratings 1..5 as single tokens after {cue!r} "
        f"({'; '.join(failures) or 'the five ids are not distinct'}); use a model whose "
        "tokenizer has single-token digits"
    )


def adapt_to_tokens(suffix: str, rating: RatingTokens) -> str:
    """Drop the answer cue's trailing space when the rating tokens carry the space."""
    if rating.strip_cue_space and suffix.endswith(" "):
        return suffix[:-1]
    return suffix


# --------------------------------------------------------------------------- SelectLLM

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
_NUMBER = re.compile(r"(?<![\d.-])\d{1,6}(?![\d.]*\d)")  # not part of a decimal or a negative number


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

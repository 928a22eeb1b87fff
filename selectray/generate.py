"""Synthetic instruction pools at scale (`selectray generate`). Pure numpy/pyarrow, no Ray.

A row: a domain (Zipf-like weights), one of its subjects, an instruction template, an optional
context, and a response of log-normally many sentences (a long tail). Texts are sequences of
tokens (phrase ids); one Arrow `take` over the token table turns a block of rows into text, its
data buffer already in row order, so no per-row Python runs. Each block of `BLOCK` rows has its
own seed (seed, block): a row depends only on the seed and its number, not on shards or format.

Planted bad rows (a share of the pool, one defect each) cover every reject reason of the read
stage (selectray.stages.validate) the format can carry. Parquet carries neither `bad_type` (a
column has one type per file: a number in a text column fails the whole file) nor `bad_encoding`
in string columns (Arrow refuses invalid UTF-8); JSON Lines carries both, and `bad_json`.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectray.errors import ConfigError
from selectray.settings import ReadConfig

BLOCK = 8192  # rows drawn from one seed; big enough for numpy, small enough for the cache
MAX_CHARS = ReadConfig.model_fields["max_chars"].default  # too_long rows exceed it, good rows stay well below
REASONS = {
    "parquet": ("empty_instruction", "missing_output", "missing_id", "duplicate_id", "too_long"),
    "jsonl": ("empty_instruction", "missing_output", "missing_id", "duplicate_id", "too_long",
              "bad_type", "bad_json", "bad_encoding"),
}
COLUMNS = ("id", "instruction", "input", "output", "domain")
MAX_SENTENCES = 100  # cap of the response's long tail: 100 sentences stay far below MAX_CHARS
MANIFEST = "_generate.json"
SUBJECTS = 12  # per domain, in DOMAINS

# name: subjects | ... ; facets | ... . Subjects share a domain's words, so embeddings cluster by domain.
DOMAINS = """
astronomy: black holes|exoplanets|the solar wind|neutron stars|dark matter|the Big Bang|comets|galaxy formation|the phases of the Moon|radio telescopes|solar eclipses|the Kuiper belt; gravity|orbits|light years|spectra|observation|telescope time
biology: photosynthesis|DNA replication|the immune system|cell division|enzymes|natural selection|mitochondria|protein folding|gut bacteria|the nervous system|ecosystems|gene expression; cells|proteins|energy|mutations|organisms|adaptation
chemistry: chemical bonds|acids and bases|oxidation|catalysts|polymers|the periodic table|chemical equilibrium|electrolysis|organic synthesis|solubility|reaction rates|isotopes; electrons|temperature|concentration|molecules|safety|lab technique
physics: Newton's laws|thermodynamics|electromagnetism|quantum tunnelling|special relativity|friction|wave interference|superconductivity|momentum|entropy|optics|nuclear fission; energy|forces|units|measurement|symmetry|conservation laws
geology: plate tectonics|volcanoes|earthquakes|the rock cycle|glaciers|erosion|minerals|fossils|groundwater|mountain building|sedimentary layers|the Earth's mantle; pressure|time scales|heat|stratigraphy|field work|sampling
climate: climate change|renewable energy|carbon capture|ocean currents|the greenhouse effect|heat waves|solar panels|wind turbines|sea level rise|the carbon cycle|battery storage|deforestation; emissions|temperature records|policy|grid capacity|cost|feedback loops
medicine: vaccines|antibiotic resistance|blood pressure|diabetes|sleep apnoea|the placebo effect|clinical trials|allergies|migraines|anaesthesia|cholesterol|physical therapy; symptoms|dosage|risk factors|diagnosis|side effects|patient history
nutrition: dietary fibre|protein intake|vitamin D|intermittent fasting|hydration|the Mediterranean diet|food labels|added sugar|meal planning|gut health|iron deficiency|plant-based eating; portions|calories|micronutrients|habits|cost|taste
fitness: strength training|marathon preparation|stretching|interval training|yoga|swimming technique|rest days|posture|cycling|core stability|running shoes|home workouts; recovery|form|progression|heart rate|injury risk|consistency
cooking: sourdough bread|risotto|knife skills|fermentation|crème brûlée|stir-frying|homemade pasta|braising|spice blends|lentil soup|meal prep|roasting vegetables; heat control|seasoning|timing|texture|ingredients|equipment
gardening: composting|tomato plants|pruning roses|soil acidity|raised beds|seed starting|companion planting|watering schedules|houseplants|garden pests|perennials|mulching; sunlight|drainage|season|nutrients|spacing|climate zone
travel: Lisbon|Kyoto|Patagonia|São Paulo|Reykjavik|Zürich|Marrakesh|train travel in Europe|backpacking|travel insurance|jet lag|packing light; budget|itinerary|local customs|transport|safety|weather
history: the French Revolution|the printing press|the Roman Empire|the Industrial Revolution|the Silk Road|the Cold War|ancient Egypt|the Renaissance|the Ottoman Empire|the Meiji era|the fall of Constantinople|the abolition movement; sources|causes|consequences|chronology|key figures|historiography
economics: inflation|supply and demand|interest rates|unemployment|trade deficits|monopolies|game theory|economic growth|central banks|minimum wage|opportunity cost|behavioural economics; incentives|prices|markets|data|policy|expectations
finance: compound interest|index funds|retirement savings|credit scores|mortgages|budgeting|emergency funds|stock options|bond yields|taxes on investments|diversification|student loans; risk|fees|returns|time horizon|liquidity|discipline
law: contract law|copyright|tenant rights|data protection|employment contracts|small claims court|intellectual property|privacy law|wills and estates|consumer protection|liability|the appeals process; evidence|jurisdiction|deadlines|precedent|obligations|documentation
python: list comprehensions|decorators|generators|type hints|virtual environments|exception handling|the asyncio library|unit testing|dataclasses|context managers|regular expressions|packaging with pyproject; readability|performance|edge cases|tests|memory use|error messages
webdev: CSS grid|REST APIs|React hooks|web accessibility|HTTP caching|form validation|responsive design|JavaScript promises|cookies and sessions|server-side rendering|web fonts|CORS; browsers|latency|security|users|bundle size|semantics
databases: SQL joins|database indexes|transactions|normalisation|query plans|NoSQL stores|schema migrations|replication|sharding|stored procedures|connection pooling|backups; consistency|throughput|locking|storage|queries|durability
machine learning: gradient descent|overfitting|decision trees|neural networks|cross-validation|transformers|feature scaling|reinforcement learning|embeddings|naïve Bayes|k-means clustering|model evaluation; data quality|loss functions|hyperparameters|bias|compute|generalisation
security: phishing|password managers|two-factor authentication|public key cryptography|ransomware|firewalls|SQL injection|software updates|zero trust networks|threat modelling|secure backups|social engineering; attack surface|permissions|encryption|logging|incident response|user training
mathematics: prime numbers|calculus|linear algebra|probability|geometry proofs|complex numbers|graph theory|differential equations|set theory|the Pythagorean theorem|logarithms|matrix multiplication; notation|intuition|proofs|examples|definitions|exercises
statistics: p-values|confidence intervals|regression|sampling bias|the central limit theorem|Bayesian inference|standard deviation|A/B testing|correlation and causation|outliers|hypothesis tests|survey design; sample size|assumptions|variance|visualisation|interpretation|data collection
writing: short stories|haiku|persuasive essays|cover letters|poetry about the sea|dialogue|book reviews|personal essays|limericks|opening lines|character development|editing drafts; tone|structure|audience|word choice|rhythm|clarity
business: marketing plans|customer retention|pricing strategy|startup funding|team meetings|supply chains|brand identity|product launches|negotiation|remote teams|quarterly reports|small business loans; customers|margins|competition|goals|communication|risk
careers: job interviews|résumés|salary negotiation|career changes|networking|performance reviews|internships|burnout|mentorship|public speaking|time management|freelancing; skills|confidence|preparation|feedback|goals|reputation
education: study techniques|homeschooling|online courses|exam anxiety|reading with children|classroom management|learning a language|note taking|group projects|standardised tests|tutoring|lifelong learning; motivation|attention|practice|assessment|routine|curiosity
music: music theory|learning the guitar|jazz improvisation|chord progressions|home recording|the history of the blues|piano practice|rhythm and tempo|songwriting|orchestras|electronic music|singing technique; ear training|harmony|practice time|instruments|performance|listening
film and art: film editing|oil painting|photography composition|the history of cinema|sculpture|colour theory|documentary making|street art|animation|museum curation|screenwriting|art criticism; light|composition|style|audience|materials|symbolism
psychology: cognitive biases|memory|habit formation|motivation|procrastination|child development|emotional intelligence|the bystander effect|sleep and mood|social anxiety|decision making|resilience; behaviour|experiments|perception|emotions|attention|environment
philosophy: free will|utilitarianism|the trolley problem|stoicism|the mind-body problem|existentialism|moral relativism|the social contract|epistemology|the ship of Theseus|virtue ethics|personal identity; arguments|premises|intuitions|objections|definitions|thought experiments
language: English grammar|the subjunctive mood|French verbs|punctuation|phrasal verbs|Japanese writing systems|sign languages|dialects|etymology|translation|Spanish pronunciation|academic vocabulary; usage|rules|exceptions|context|register|examples
automotive: electric cars|tyre pressure|engine oil|hybrid engines|brake pads|winter driving|car batteries|fuel efficiency|used car inspections|road trips|car insurance|autonomous driving; maintenance|cost|safety|mileage|warning signs|regulations
home: fixing a leaky tap|painting walls|insulation|mould removal|assembling furniture|electrical outlets|tiling a bathroom|decluttering|smart thermostats|noise reduction|garden sheds|window repair; tools|materials|budget|safety|measurements|time
pets: dog training|cat behaviour|aquarium care|adopting a rescue dog|pet nutrition|puppy socialisation|rabbit care|vet visits|litter training|bird keeping|grooming|senior pets; routine|health|patience|diet|environment|signals
"""


HEADS = (  # noqa: SIM905
    "Explain {s} in simple terms, with attention to {f}.|How does {s} affect {f}?|What are the most common misconceptions about {s} and {f}?|Write a short guide to {s} and {t} for a beginner.|Compare {s} with {t}.|Give three practical tips about {s} and {f}.|Summarise the key ideas behind {s}, {t} and {f}.|"
    "Why does {f} matter when dealing with {s}?|Create a lesson plan that introduces {s} before {t}.|Describe a real-world example of {s} involving {f}.|What should I know about {f} before learning {s}?|Write a paragraph about {s} and {f}.|List the steps involved in getting started with {s} and {t}.|What is the difference between {s} and {t}?|"
    "Draft an email explaining {s} and its effect on {f} to a colleague.|How would an expert evaluate {f} in {s}?|Outline how thinking about {s} and {t} has changed over time.|Suggest a small project to practise {s} with a focus on {f}.|What are the risks and benefits of {s} for {f}?|Rewrite the following text so that it explains {s} and {t} more clearly."
).split("|")
TAILS = (  # noqa: SIM905
    "||| Keep it short.| Use an example.| Answer for a beginner.| Write at most 200 words.| Use bullet points where it helps.| Be precise.| Include a common mistake to avoid.| Assume I know the basics.| Answer in a friendly tone.| Reason it through step by step.| Please be thorough.| Focus on practical advice."
).split("|")
OPENERS = (  # noqa: SIM905
    "Here is an overview of {s}.|Good question: {s} comes up often.|Let's look at {s} step by step.|In short, {s} is about {f}.|{S} can be explained in a few points.|Sure. The essentials of {s} follow.|There are a few things to know about {s}.|To answer this, start with {f}."
).split("|")
SENTENCES = (  # noqa: SIM905
    "{S} is closely tied to {f}.|Most beginners underestimate how much {f} shapes {s}.|A useful rule of thumb is to look at {f} first.|Experts in {dom} often describe {s} in terms of {f}.|When {f} changes, {s} usually changes with it.|One common mistake is to treat {s} and {t} as the same thing.|In practice, {s} depends on careful attention to {f}.|A simple example makes {s} easier to picture.|"
    "The key trade-off in {s} is between {f} and {g}.|Measuring {f} is the most reliable way to check progress with {s}.|Historically, ideas about {s} developed alongside {t}.|It helps to write down what you expect before studying {s}.|If {f} is ignored, problems with {s} appear later.|{S} is a central topic in {dom}.|Many introductions cover {s} before {t}.|There is still active debate about the role of {f} in {s}.|"
    "For everyday purposes, a rough grasp of {f} is enough.|The details of {s} matter most when {g} is limited.|People who work with {s} every day rely on {f} and {g}.|Start small, check {f}, and only then move on to {t}.|Numbers alone do not tell the whole story of {s}.|A checklist covering {f} and {g} prevents most errors.|Good resources on {s} explain {f} with diagrams.|The same principle shows up in {t}.|"
    "Unlike {t}, {s} puts {f} at the centre.|Small changes in {g} can have large effects on {s}.|Review {s} again after a week to make the knowledge stick.|Asking why {f} matters leads to a deeper understanding of {s}.|{S} rewards patience more than speed.|The bottom line: {s} is manageable once {f} is clear."
).split("|")
PREFIXES = [" ", "\n\n", "\n- ", ""]  # sentence variants: prose, new paragraph, bullet, after a number
STYLES = (0.6, 0.25, 0.15)  # prose, bullets, numbered


def _fill(template: str, dom: str, subjects: list[str], facets: list[str], s: int, k: int) -> str:
    subj = subjects[s]
    return template.format(s=subj, S=subj[0].upper() + subj[1:], t=subjects[(s + 1 + k) % len(subjects)],
                           f=facets[(s + k) % len(facets)], g=facets[(s + k + 1) % len(facets)], dom=dom)


@dataclass(frozen=True)
class Vocab:
    """Every phrase a pool is made of, as one Arrow string array per escaping, plus where each kind starts."""

    raw: pa.Array  # the phrases as text (Parquet)
    escaped: pa.Array  # the same phrases as JSON string contents (JSON Lines); structural tokens as-is
    names: list[str]  # domain names
    weights: np.ndarray  # domain probabilities
    at: dict  # kind -> first token id (per-domain kinds: of domain 0; stride in `stride`)
    stride: dict  # kind -> tokens per domain


@lru_cache(maxsize=1)
def vocab() -> Vocab:
    """Build the token table (once per process; deterministic)."""
    raw: list[str] = []
    literal: list[bool] = []  # True: the same bytes in JSON Lines (structural JSON, invalid bytes)
    at, stride = {}, {}

    def add(kind: str, items: list, lit: bool = False) -> None:
        at.setdefault(kind, len(raw))
        raw.extend(items)
        literal.extend([lit] * len(items))

    domains = [(name, *(part.split("|") for part in rest.split("; ")))
               for name, rest in (line.split(": ", 1) for line in DOMAINS.strip().splitlines())]
    for kind, templates, prefixes in (("head", HEADS, [""]), ("opener", OPENERS, [""]), ("sentence", SENTENCES, PREFIXES)):
        per_domain = [[p + x for x in [_fill(t, *d, s, k) for k, t in enumerate(templates) for s in range(SUBJECTS)]
                       for p in prefixes] for d in domains]
        stride[kind] = len(per_domain[0])
        add(kind, [x for items in per_domain for x in items])
    for kind, items in (("domain", [d[0] for d in domains]), ("tail", TAILS), ("row", ["row-"]),
                        ("number", [f"\n{j}. " for j in range(1, MAX_SENTENCES + 1)]),
                        ("digits", [f"{j:03d}" for j in range(1000)]), ("blank", ["", "   ", "\n", "\t"])):
        add(kind, items)
    filler = " ".join(_fill(t, "general knowledge", [d[1][0] for d in domains][:SUBJECTS], domains[0][2], s, k)
                      for k, t in enumerate(SENTENCES) for s in range(SUBJECTS))
    add("long", [" " + (filler * 3)[: MAX_CHARS + 100 + 1500 * j] for j in range(4)])
    fields = ["id", "instruction", "input", "output", "domain"]
    add("open", [("{" if i == 0 else ", ") + f'"{f}": "' for i, f in enumerate(fields)], lit=True)
    add("bare", [("{" if i == 0 else ", ") + f'"{f}": ' for i, f in enumerate(fields)], lit=True)
    add("json", ['"', "null", "}\n", "\n", '["not", "an", "object"]\n', "no json here\n"], lit=True)
    add("invalid", [" caf\udce9 \udcff\udcfe"], lit=True)  # undecodable bytes, kept as surrogates until encoded
    # One json.dumps and one encode for all phrases: "\x00" never occurs in them, so it splits them again.
    esc = iter(json.dumps("\x00".join(x for x, lit in zip(raw, literal) if not lit), ensure_ascii=False)[1:-1].split("\\u0000"))
    esc = [x if lit else next(esc) for x, lit in zip(raw, literal)]

    def arrow(items: list[str]) -> pa.Array:
        joined = np.frombuffer("\x00".join(items).encode("utf-8", "surrogateescape"), np.uint8)
        sep = np.flatnonzero(joined == 0)
        offsets = np.concatenate([[0], sep - np.arange(len(sep)), [len(joined) - len(sep)]]).astype(np.int32)
        return pa.Array.from_buffers(pa.binary(), len(items), [None, pa.py_buffer(offsets), pa.py_buffer(joined[joined != 0])])

    w = 1.0 / (np.arange(len(domains)) + 4.0)  # Zipf-like: the most common domain ~10 % of rows, the rarest ~1 %
    return Vocab(arrow(raw), arrow(esc), [d[0] for d in domains], w / w.sum(), at, stride)


@dataclass(frozen=True)
class Plan:
    """Which rows are bad, why, and (duplicate_id) whose id they copy. Sorted by row."""

    rows: np.ndarray  # int64 row numbers
    reasons: np.ndarray  # index into `names`
    names: tuple[str, ...]
    targets: np.ndarray  # duplicate_id rows: the row whose id they repeat (-1 otherwise)

    def counts(self) -> dict[str, int]:
        return {name: int((self.reasons == i).sum()) for i, name in enumerate(self.names)}


def plan_bad_rows(n: int, seed: int, bad_share: float, fmt: str) -> Plan:
    """round(n * bad_share) bad rows at seeded random places, split evenly over the format's reasons."""
    names = REASONS[fmt]
    total = int(round(n * bad_share))
    rng = np.random.default_rng([seed, 0xBAD])
    rows = rng.choice(n, size=total, replace=False).astype(np.int64) if total else np.zeros(0, np.int64)
    reasons = np.repeat(np.arange(len(names)), [total // len(names) + (i < total % len(names)) for i in range(len(names))])
    order = np.argsort(rows)
    rows, reasons = rows[order], reasons[order]
    good = np.ones(n, bool)
    good[rows] = False
    good = np.flatnonzero(good)
    dup = reasons == names.index("duplicate_id")
    # the good row at or below a random point under the planted row (else the first good row):
    # mostly an earlier row, so the planted row is the one rejected; the count is one per planted row anyway
    below = np.searchsorted(good, (rng.random(int(dup.sum())) * rows[dup]).astype(np.int64), "right") - 1
    targets = np.full(total, -1, np.int64)
    targets[dup] = good[np.maximum(below, 0)]
    return Plan(rows, reasons, names, targets)


class Ragged(NamedTuple):
    """Rows of token slots, flat: `tokens` (-1 = an empty slot) and the number of slots of each row."""

    tokens: np.ndarray
    counts: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def head(self, n: int) -> Ragged:
        return Ragged(self.tokens[: int(self.counts[:n].sum())], self.counts[:n])


def _matrix(m: np.ndarray) -> Ragged:
    return Ragged(m.ravel(), np.full(len(m), m.shape[1]))


def _hstack(parts: list[Ragged]) -> Ragged:
    """Row i of the result: row i of every part, in order."""
    counts = sum(p.counts for p in parts)
    out = np.empty(int(counts.sum()), np.int64)
    at = np.cumsum(counts) - counts
    for p in parts:
        out[np.repeat(at - p.starts, p.counts) + np.arange(len(p.tokens))] = p.tokens
        at = at + p.counts
    return Ragged(out, counts)


def _row_tokens(block: int, seed: int, plan: Plan, n_rows: int) -> tuple[dict, dict, dict]:
    """The first `n_rows` rows of a block as token slots per column, null masks per column, and
    the JSON-only defects (`number`: the instruction is a JSON number; `broken`: -1 or a kind of
    broken line). Everything is drawn for the whole block, so a row never depends on `n_rows`."""
    v = vocab()
    rng = np.random.default_rng([seed, block])
    B, S, first = BLOCK, SUBJECTS, block * BLOCK
    dom = rng.choice(len(v.names), size=B, p=v.weights)
    subj, head = rng.integers(0, S, B), rng.integers(0, len(HEADS), B)
    tail, opener = rng.integers(0, len(TAILS), B), rng.integers(0, len(OPENERS), B)
    style = rng.choice(3, size=B, p=STYLES)
    k = np.clip(np.rint(rng.lognormal(1.85, 0.8, B)), 1, MAX_SENTENCES).astype(np.int64)
    n_in = np.where(rng.random(B) < 0.3, rng.integers(1, 7, B), 0)
    i_subj, i_tmpl = rng.integers(0, S, (B, 6)), rng.integers(0, len(SENTENCES), (B, 6))
    sent0 = v.at["sentence"] + dom * v.stride["sentence"]
    of = np.repeat(np.arange(B), k)  # the row of every response sentence
    j = np.arange(len(of)) - np.repeat(np.cumsum(k) - k, k)
    s_subj = np.where(rng.random(len(of)) < 0.5, subj[of], rng.integers(0, S, len(of)))  # half on the row's subject
    s_tmpl = rng.integers(0, len(SENTENCES), len(of))
    st = style[of]
    variant = np.select([st == 2, st == 1, (rng.random(len(of)) < 0.12) & (j > 0)], [3, 2, 1], 0)
    pairs = np.stack([np.where(st == 2, v.at["number"] + j, -1), sent0[of] + (s_tmpl * S + s_subj) * 4 + variant], 1)
    first_tok = v.at["opener"] + dom * v.stride["opener"] + opener * S + subj
    out = _hstack([_matrix(first_tok[:, None]), Ragged(pairs.ravel(), 2 * k), _matrix(np.full((B, 1), -1))])
    jj = np.arange(6)
    inp = np.where(jj < n_in[:, None], sent0[:, None] + (i_tmpl * S + i_subj) * 4 + np.where(jj > 0, 0, 3), -1)
    instr = np.stack([v.at["head"] + dom * v.stride["head"] + head * S + subj, np.full(B, -1), v.at["tail"] + tail], 1)
    row = first + np.arange(B)
    ident = np.stack([np.full(B, v.at["row"]), *(v.at["digits"] + (row // 10**e) % 1000 for e in (6, 3, 0))], 1)
    null = {c: np.zeros(B, bool) for c in ("id", "instruction", "output")}
    number, broken = np.zeros(B, bool), np.full(B, -1)
    lo, hi = np.searchsorted(plan.rows, [first, first + n_rows])
    o_start, o_end = out.starts, out.starts + out.counts
    for r, why, target in zip(plan.rows[lo:hi] - first, plan.reasons[lo:hi], plan.targets[lo:hi]):
        name, c = plan.names[why], int(r) % 4
        if name == "empty_instruction":  # "", blanks, a newline, null
            instr[r] = [v.at["blank"] + c if c < 3 else -1, -1, -1]
            null["instruction"][r] = c == 3
        elif name == "missing_output":  # "", null, blanks, null
            out.tokens[o_start[r]:o_end[r]] = -1
            out.tokens[o_start[r]] = v.at["blank"] + (1 if c == 2 else 0)
            null["output"][r] = c % 2 == 1
        elif name == "missing_id":  # "", blanks, a newline, null
            ident[r] = [v.at["blank"] + c % 3, -1, -1, -1]
            null["id"][r] = c == 3
        elif name == "duplicate_id":
            ident[r, 1:] = v.at["digits"] + (target // 10 ** np.array([6, 3, 0])) % 1000
        elif name == "too_long":
            out.tokens[o_end[r] - 1] = v.at["long"] + c
        elif name == "bad_type":  # a number of 6 digits, no leading zero
            instr[r] = [v.at["digits"] + 100 + int(row[r]) % 900, v.at["digits"] + int(row[r]) % 1000, -1]
            number[r] = True
        elif name == "bad_json":
            broken[r] = int(row[r]) % 3
        elif name == "bad_encoding":
            instr[r, 1] = v.at["invalid"]
    cols = {"id": _matrix(ident), "instruction": _matrix(instr), "input": _matrix(inp), "output": out,
            "domain": _matrix((v.at["domain"] + dom)[:, None])}
    return ({c: m.head(n_rows) for c, m in cols.items()}, {c: m[:n_rows] for c, m in null.items()},
            {"number": number[:n_rows], "broken": broken[:n_rows]})


def _take(table: pa.Array, rag: Ragged) -> tuple[pa.Buffer, np.ndarray]:
    """The bytes of every row's tokens in row order (one Arrow take) and each row's byte offsets."""
    keep = rag.tokens >= 0
    flat = pc.take(table, pa.array(rag.tokens[keep].astype(np.int32)), boundscheck=False)
    tok_off = np.frombuffer(flat.buffers()[1], np.int32, len(flat) + 1, flat.offset * 4)
    kept = np.concatenate([[0], np.cumsum(keep)])[np.concatenate([[0], np.cumsum(rag.counts)])]
    offsets = tok_off[kept]
    return flat.buffers()[2][int(offsets[0]):int(offsets[-1])], (offsets - offsets[0]).astype(np.int32)


def _string_column(table: pa.Array, rag: Ragged, null: np.ndarray | None) -> pa.Array:
    data, offsets = _take(table, rag)
    mask = None if null is None or not null.any() else pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.StringArray.from_buffers(len(rag.counts), pa.py_buffer(offsets), data, mask, int(null.sum()) if mask else 0)


def block_table(block: int, seed: int, plan: Plan, n_rows: int = BLOCK) -> pa.Table:
    """Rows block*BLOCK ... of a Parquet pool, the first `n_rows` of them."""
    cols, null, _ = _row_tokens(block, seed, plan, n_rows)
    return pa.table({c: _string_column(vocab().raw, cols[c], null.get(c)) for c in COLUMNS})


def block_lines(block: int, seed: int, plan: Plan, n_rows: int = BLOCK) -> tuple[pa.Buffer, np.ndarray]:
    """Rows block*BLOCK ... of a JSON Lines pool as bytes, and each line's byte offsets."""
    v = vocab()
    cols, null, extra = _row_tokens(block, seed, plan, n_rows)
    number, broken = extra["number"], extra["broken"]
    quote, nul, end, newline = (v.at["json"] + i for i in range(4))
    parts = []
    for i, c in enumerate(COLUMNS):  # "name": "text" | "name": null | "name": 123
        is_null = null.get(c, np.zeros(n_rows, bool))
        bare = is_null | number if c == "instruction" else is_null
        body = cols[c]
        body.tokens[np.repeat(is_null, body.counts)] = -1
        parts += [_matrix(np.where(bare, v.at["bare"] + i, v.at["open"] + i)[:, None]), body,
                  _matrix(np.where(is_null, nul, np.where(bare, -1, quote))[:, None])]
    line = _hstack([*parts, _matrix(np.full((n_rows, 1), end))])
    starts, ends = line.starts, line.starts + line.counts
    cut = cols["id"].counts[0] + 4  # {"id": "…", "instruction": "<its first token>
    for r in np.flatnonzero(broken >= 0):  # kind 0: cut inside a string; 1, 2: no JSON object
        line.tokens[starts[r] + (cut if broken[r] == 0 else 0):ends[r]] = -1
        line.tokens[starts[r] + (cut if broken[r] == 0 else 0)] = newline if broken[r] == 0 else v.at["json"] + 3 + broken[r]
    return _take(v.escaped, line)


def pool_table(rows: int, seed: int = 0, bad_share: float = 0.01) -> pa.Table:
    """A whole Parquet-format pool in memory (the rows `write_pool` writes for the same arguments)."""
    plan = plan_bad_rows(rows, seed, bad_share, "parquet")
    return pa.concat_tables([block_table(b, seed, plan, min(BLOCK, rows - b * BLOCK))
                             for b in range(-(-rows // BLOCK))])


def check_args(rows: int, bad_share: float, fmt: str, shard_rows: int) -> None:
    """One-line errors for arguments `write_pool` cannot honour."""
    for wrong, message in ((not 1 <= rows < 10**9, f"--rows must be between 1 and 999,999,999, got {rows}"),
                           (shard_rows < 1, f"--shard-rows must be at least 1, got {shard_rows}"),
                           (not 0 <= bad_share <= 0.5, f"--bad-share must be between 0 and 0.5, got {bad_share}"),
                           (fmt not in REASONS, f"--format must be one of {', '.join(REASONS)}, got '{fmt}'")):
        if wrong:
            raise ConfigError(message)

def write_pool(out: str | Path, rows: int, *, seed: int = 0, bad_share: float = 0.01, fmt: str = "parquet",
               shard_rows: int = 100_000, overwrite: bool = False, threads: int | None = None) -> dict:
    """Write a pool as shards `part-NNNNN.<fmt>` plus `_generate.json`; returns that summary. The same
    arguments give byte-identical files, whatever `threads` (default: one per core). A folder that
    already holds a generated pool is an error unless `overwrite` (which removes only those files)."""
    check_args(rows, bad_share, fmt, shard_rows)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    ours = [p for p in (*out.glob("part-*.parquet"), *out.glob("part-*.jsonl"), out / MANIFEST) if p.is_file()]
    if ours and not overwrite:
        raise ConfigError(f"--out {out} already holds a generated pool ({ours[0].name}, ...); pass --overwrite or pick another folder")
    for p in ours:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)

    plan = plan_bad_rows(rows, seed, bad_share, fmt)
    starts = list(range(0, rows, shard_rows))
    files = [f"part-{i:05d}.{fmt}" for i in range(len(starts))]
    # Shards are independent; Arrow's take, compression and file writes release the GIL, so
    # threads keep the cores busy. Each file's bytes depend only on the arguments.
    with ThreadPoolExecutor(max(1, min(threads or os.cpu_count() or 1, len(starts)))) as pool:
        list(pool.map(lambda a: _write_shard(out / files[a[0]], a[1], min(a[1] + shard_rows, rows), seed, plan, fmt),
                      enumerate(starts)))
    summary = {"rows": rows, "format": fmt, "seed": seed, "bad_share": bad_share, "shard_rows": shard_rows,
               "files": files, "columns": list(COLUMNS), "max_chars": MAX_CHARS, "planted": plan.counts(),
               "planted_total": len(plan.rows)}
    (out / MANIFEST).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _write_shard(path: Path, start: int, stop: int, seed: int, plan: Plan, fmt: str) -> None:
    """Rows start..stop-1 of the pool into one file."""
    pieces = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        lo, hi = max(start - b * BLOCK, 0), min(stop - b * BLOCK, BLOCK)  # only the rows up to `hi` are built
        if fmt == "parquet":
            pieces.append(block_table(b, seed, plan, hi).slice(lo, hi - lo))
        else:
            data, offsets = block_lines(b, seed, plan, hi)
            pieces.append(data[int(offsets[lo]):int(offsets[hi])])
    if fmt == "parquet":
        pq.write_table(pa.concat_tables(pieces), path, use_dictionary=["domain"], write_statistics=["id", "domain"])
    else:
        with open(path, "wb") as f:
            for piece in pieces:
                f.write(piece)

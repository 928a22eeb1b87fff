"""SelectIT scoring throughput: the naive reference loop vs selectray's scorer, same run.

The naive way (as in SelectIT's released code): one prompt per forward pass, batch size 1,
full-vocabulary logits at every position, softmax at the last one. selectray: batches by
token length, logits of the last position only, and (layout sample-first) the row's prefix
computed once for its K prompts. All on the same rows and model (SmolLM2-135M, CPU).

    .venv/bin/python benchmarks/bench_selectit.py [--rows 50] [--repeats 1] [--threads 2]

Checks that the scorer's probabilities equal the naive ones (paper layout, 1e-4), prints
rows/s, tokens/s, the speed-up ratios, the Spearman correlation of the row scores of the
two layouts, and the FLOP-bound ceiling of the model on this machine.

    .venv/bin/python benchmarks/bench_selectit.py --case tiny [--rows 400] [--repeats 3]

The score stage's own cost (tokenization, fitting, batching) next to the model's: a tiny
random Llama built here (2 layers, hidden size 64, SmolLM2's tokenizer, as the tests'
``tiny_llama_dir``), scored by today's SelectITScorer and by the scorer as it was at
``BASELINE_COMMIT`` (two tokenizer calls per prompt, loaded from git), in interleaved
rounds. Prints (row, prompt) pairs/s, the share of the scorer's time outside the model's
forward passes, and the largest probability difference between the two.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy.stats import spearmanr

from selectray.models import load_model
from selectray.prompts import RATING_PROMPTS, build_rating_prompt
from selectray.scoring import row_scores
from selectray.stages.scorer import SelectITScorer

TOPICS = [
    ("photosynthesis", "plants capture light energy in chlorophyll and use it to turn carbon dioxide and water into glucose"),
    ("compound interest", "interest is earned on both the original principal and on the interest already added"),
    ("the water cycle", "water evaporates, condenses into clouds and returns to the ground as precipitation"),
    ("binary search", "a sorted list is halved at every step by comparing the target with the middle element"),
    ("vaccines", "a harmless piece of a pathogen trains the immune system to recognise the real one later"),
    ("plate tectonics", "the lithosphere is broken into plates that drift slowly over the mantle"),
    ("inflation", "a general rise in prices reduces what a unit of money can buy"),
    ("recursion", "a function solves a problem by calling itself on smaller instances of the same problem"),
    ("the French Revolution", "a decade of upheaval from 1789 ended the absolute monarchy in France"),
    ("neural networks", "layers of weighted sums and nonlinearities are fitted to data by gradient descent"),
]
TASKS = [
    "Explain {t} to a curious high-school student in a short paragraph, with one concrete example.",
    "Write a clear, well organised explanation of {t} for a beginner, and mention a common misconception.",
    "Summarise the key idea behind {t} in plain language and say why it matters in everyday life.",
    "Describe how {t} works step by step, keeping the answer friendly and accurate.",
    "Give a concise overview of {t}, then list two practical consequences of it.",
]
FILLERS = [
    "This is easiest to see with a small example that anyone can try at home.",
    "Scientists and engineers rely on this idea in many different fields.",
    "A frequent mistake is to think the process happens all at once, but it unfolds gradually.",
    "Put simply, small steps repeated many times add up to a large effect.",
    "Understanding this helps when reading the news or making everyday decisions.",
    "Textbooks often draw it as a cycle or a diagram, which makes the parts easier to remember.",
    "The details can get technical, yet the core intuition fits in a single sentence.",
    "Historically, the idea took a long time to be accepted by experts.",
]
OFF_TOPIC = "I am not sure what you mean, but here is a recipe for pancakes: mix flour, eggs and milk, then fry. "


def make_rows(n: int, seed: int = 0, target_chars: int = 750) -> list[tuple[str, str, str]]:
    """Deterministic, varied instruction/response rows of about ``target_chars`` characters."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, fact = TOPICS[i % len(TOPICS)]
        instruction = rng.choice(TASKS).format(t=topic)
        kind = rng.random()
        if kind < 0.15:  # off-topic answer
            parts = [OFF_TOPIC]
        elif kind < 0.3:  # repetitive answer
            parts = [f"{topic.capitalize()} is {topic}. "]
        else:
            parts = [f"{topic.capitalize()} means that {fact}. "]
        while len(instruction) + sum(map(len, parts)) < target_chars + 20:
            parts.append(parts[0] if 0.15 <= kind < 0.3 else rng.choice(FILLERS) + " ")
        response = "".join(parts)[: target_chars - len(instruction)].rsplit(" ", 1)[0]
        rows.append((instruction, "", response))
    return rows


def naive_probs(lm, rows) -> tuple[np.ndarray, int]:
    """The reference loop: one prompt per forward pass, full logits, batch size 1."""
    tok, ids5, out, tokens = lm.tokenizer, list(lm_rating_ids(lm)), [], 0
    with torch.inference_mode():
        for row in rows:
            for rp in RATING_PROMPTS:
                text = build_rating_prompt(rp, *row, "paper")[1]
                ids = ([tok.bos_token_id] if lm.add_bos else []) + tok.encode(text, add_special_tokens=False)
                tokens += len(ids)
                logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
                out.append(torch.softmax(logits.float(), -1)[ids5].double().numpy())
    return np.array(out), tokens


def lm_rating_ids(lm):
    from selectray.prompts import find_rating_tokens

    return find_rating_tokens(lm.tokenizer).ids


def scorer_probs(scorer, rows) -> np.ndarray:
    batch = {
        "id": np.arange(len(rows)),
        "instruction": np.array([r[0] for r in rows], dtype=object),
        "output": np.array([r[2] for r in rows], dtype=object),
    }
    out = scorer(batch)
    return np.stack([out[f"p{i}"] for i in range(1, 6)], axis=1)


def matmul_flops(seconds: float = 2.0) -> float:
    """Measured float32 GEMM throughput (FLOP/s) on model-like shapes."""
    a, b = torch.randn(512, 576), torch.randn(576, 1536)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 512 * 576 * 1536 * n / (time.perf_counter() - start)


def timed_rounds(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Run every method once per round, rounds interleaved so that a noisy neighbour on a
    shared machine slows all methods alike; the fastest round of each method counts."""
    best, results = dict.fromkeys(fns, float("inf")), {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


# ----- the score stage's own cost, on a tiny model ------------------------------------------------

# The scorer before batched tokenization (one encode per prompt to fit it, one more to run it).
BASELINE_COMMIT = "59212a3565fb7fd682464ca4c9fa2de7bb40019f"
BASE_FILES = ("selectray/backends/base.py", "selectray/backends/transformers.py", "selectray/stages/scorer.py")


def baseline_scorer(lm, **options):
    """A SelectITScorer of ``BASELINE_COMMIT`` on its own backend of that commit (``git show``)."""
    root, mods = Path(__file__).resolve().parents[1], {}
    for path in BASE_FILES:
        src = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:{path}"], cwd=root, capture_output=True, text=True,
                             check=True).stdout
        name = "baseline_" + Path(path).stem
        mod = sys.modules[name] = types.ModuleType(name)
        exec(compile(src.replace("selectray.backends.base import", "baseline_base import"), path, "exec"), mod.__dict__)
        mods[Path(path).stem] = mod
    scorer = mods["scorer"].SelectITScorer(lm, **options)
    scorer.backend = mods["transformers"].TransformersBackend(lm, batch_size=options.get("batch_size", 8),
                                                            max_length=options.get("max_length"))
    return scorer


def tiny_model(dirname: str):
    """A 2-layer random Llama (hidden size 64) on SmolLM2's tokenizer, as the tests' tiny_llama_dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selectray.models import load_tokenizer, prepare_model_dir
    from selectray.prompts import find_rating_tokens

    tok = load_tokenizer(prepare_model_dir("smollm2-135m")[2])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # rating probabilities that vary between prompts (see tests/conftest.py _sharpen)
        model.get_output_embeddings().weight[list(find_rating_tokens(tok).ids)] *= 60
    model.save_pretrained(dirname)
    tok.save_pretrained(dirname)
    return load_model(dirname, device="cpu")


class ForwardClock:
    """Seconds spent in the model's forward passes (the instance's ``forward`` wrapped)."""

    def __init__(self, model):
        self.seconds, inner = 0.0, model.forward

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        model.forward = timed


def score_in_batches(scorer, rows, batch_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n*K, 5) and truncated flags, the rows sent in Ray Data-sized batches."""
    outs = [scorer({"id": np.arange(i, min(i + batch_rows, len(rows))),
                    "instruction": np.array([r[0] for r in rows[i:i + batch_rows]], dtype=object),
                    "output": np.array([r[2] for r in rows[i:i + batch_rows]], dtype=object)})
            for i in range(0, len(rows), batch_rows)]
    return (np.concatenate([np.stack([o[f"p{j}"] for j in range(1, 6)], 1) for o in outs]),
            np.concatenate([o["truncated"] for o in outs]))


def tiny_case(args) -> None:
    rows = make_rows(args.rows)
    k = len(RATING_PROMPTS)
    with tempfile.TemporaryDirectory() as tmp:
        lm = tiny_model(tmp)
        clock = ForwardClock(lm.model)
        cases = [("paper", None), ("sample-first", None), ("paper", args.truncate_at)]
        print(f"tiny Llama ({lm.params / 1e6:.1f}M params), {len(rows)} rows of "
              f"{np.mean([len(r[0]) + len(r[2]) for r in rows]):.0f} chars, K={k}, batches of {args.batch_rows} rows, "
              f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"\n{'layout':<26}{'pairs/s old':>12}{'new':>8}{'x old':>7}{'fwd ms/pair old':>17}{'new':>6}"
              f"{'outside fwd old':>17}{'new':>6}{'max |dp|':>10}")
        for layout, max_length in cases:
            opts = {"layout": layout, "batch_size": args.batch_size, "max_length": max_length}
            scorers = {"old": baseline_scorer(lm, **opts), "new": SelectITScorer(lm, **opts)}
            best = {name: (float("inf"), 0.0) for name in scorers}
            results = {}
            for _ in range(args.repeats):  # interleaved rounds: a noisy neighbour slows both alike
                for name, scorer in scorers.items():
                    clock.seconds, start = 0.0, time.perf_counter()
                    results[name] = score_in_batches(scorer, rows, args.batch_rows)
                    total = time.perf_counter() - start
                    best[name] = min(best[name], (total, clock.seconds))
            (t_old, f_old), (t_new, f_new) = best["old"], best["new"]
            (p_old, cut_old), (p_new, cut_new) = results["old"], results["new"]
            same = ~(cut_old | cut_new)  # truncated pairs follow the new cut rule (token ends), not compared
            diff = np.abs(p_new[same] - p_old[same]).max() if same.any() else float("nan")
            name = layout + (f", max_length {max_length}" if max_length else "")
            n = len(rows) * k
            print(f"{name:<26}{n / t_old:>12.0f}{n / t_new:>8.0f}{t_old / t_new:>7.2f}{1e3 * f_old / n:>17.2f}"
                  f"{1e3 * f_new / n:>6.2f}{100 * (1 - f_old / t_old):>16.0f}%{100 * (1 - f_new / t_new):>5.0f}%"
                  f"{diff:>10.1e}")
            if max_length:
                print(f"  ({cut_new.mean():.0%} of the pairs truncated; probabilities compared on the others)")
            if not max_length:  # float32 rounding of other batch shapes, far below the tests' 1e-4
                assert diff <= 1e-5, f"the scorer's probabilities changed by {diff}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default="smollm2-135m", help="model spec (e.g. gemma3-270m)")
    ap.add_argument("--case", choices=("model", "tiny"), default="model",
                    help="model: naive loop vs scorer on --model; tiny: the scorer vs its baseline on a tiny model")
    ap.add_argument("--batch-rows", type=int, default=64, help="rows per scorer call (tiny case)")
    ap.add_argument("--truncate-at", type=int, default=128, help="context of the truncating run (tiny case)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.case == "tiny":
        return tiny_case(args)
    rows = make_rows(args.rows)
    k = len(RATING_PROMPTS)
    print(f"{len(rows)} rows, {np.mean([len(r[0]) + len(r[2]) for r in rows]):.0f} chars on average, K={k}, "
          f"{args.threads} threads")

    lm = load_model(args.model, device="cpu")
    print(f"model {lm.name} ({lm.params / 1e6:.1f}M params), loaded from {lm.source} in {lm.load_seconds:.1f} s")
    paper = SelectITScorer(lm, batch_size=args.batch_size, layout="paper")
    first = SelectITScorer(lm, batch_size=args.batch_size, layout="sample-first")

    times, res = timed_rounds(
        {
            "naive": lambda: naive_probs(lm, rows),
            "paper": lambda: scorer_probs(paper, rows),
            "first": lambda: scorer_probs(first, rows),
        },
        args.repeats,
    )
    t_naive, t_paper, t_first = times["naive"], times["paper"], times["first"]
    (p_naive, tokens), p_paper, p_first = res["naive"], res["paper"], res["first"]

    diff = np.abs(p_paper - p_naive).max()
    print(f"max |p(scorer) - p(naive)| = {diff:.2e}")
    assert diff <= 1e-4, f"the scorer's probabilities differ from the naive loop's by {diff}"

    n = len(rows)
    print(f"\n{'method':<34}{'s':>8}{'rows/s':>9}{'tokens/s':>10}{'x naive':>9}")
    for name, t in (
        ("naive (bs 1, full logits)", t_naive),
        ("selectray, layout paper", t_paper),
        ("selectray, layout sample-first", t_first),
    ):
        print(f"{name:<34}{t:>8.1f}{n / t:>9.2f}{tokens / t:>10.0f}{t_naive / t:>9.2f}")
    print("(tokens/s: prompt tokens of the paper layout per second of each method)")

    s_paper = row_scores(p_paper.reshape(n, k, 5))
    s_first = row_scores(p_first.reshape(n, k, 5))
    rho = spearmanr(s_paper, s_first).statistic
    print(f"\nSpearman(row scores, paper vs sample-first) = {rho:.3f}")

    flops = matmul_flops()
    ceiling = flops / (2 * lm.params)
    emb = lm.model.get_input_embeddings().weight.numel()
    print(f"\nmatmul throughput {flops / 1e9:.1f} GFLOP/s; FLOP-bound ceiling 2 x {lm.params / 1e6:.1f}M params: "
          f"{ceiling:.0f} tokens/s = {ceiling / (tokens / n):.2f} rows/s (paper layout)")
    print(f"without the output layer at every position ({(lm.params - emb) / 1e6:.1f}M params/token): "
          f"{flops / (2 * (lm.params - emb)):.0f} tokens/s; selectray paper layout reaches "
          f"{100 * (tokens / t_paper) / (flops / (2 * (lm.params - emb))):.0f}% of it")
    print(f"\ngoals: paper >= 1.3x naive: {t_naive / t_paper:.2f}x; sample-first >= 3x naive: {t_naive / t_first:.2f}x")


if __name__ == "__main__":
    main()

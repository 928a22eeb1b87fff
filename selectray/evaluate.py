"""`selectray eval`: does the selection train a better model than a comparison set?

For each seed, a causal LM starts from the same weights and is fine-tuned with the same
steps and hyper-parameters twice: on the run's selection and on the comparison (a fresh
random subset of the run's usable pool of the same size, or another run's selection).
Each is then scored by its mean response-token loss on held-out rows. Rows are laid out
as `export.PROMPT_TEMPLATE` + response + EOS; the loss (training and evaluation) covers
the response tokens and the EOS only. No Ray here: one process, CPU or CUDA.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from selectray.errors import SelectrayError
from selectray.export import (
    PROMPT_TEMPLATE,
    FinishedRun,
    TextRows,
    content_key,
    drop_rejected_lines,
    prompt_text,
    read_rows_file,
    text_rows,
)
from selectray.resources import cuda_available

DEFAULTS = {"steps": 30, "lr": 5e-5, "batch_size": 8, "max_length": 256}
IGNORE = -100  # label of a position the loss skips (prompt and padding), as torch's cross_entropy expects


@dataclass
class Example:
    """One tokenized row: prompt tokens first, then the response tokens (and EOS)."""

    ids: list[int]
    n_prompt: int


def encode(tokenizer, rows: TextRows, max_length: int, add_bos: bool) -> tuple[list[Example], int]:
    """Tokenize rows as prompt + response + EOS; returns the examples and how many were truncated.

    Prompt and response are tokenized apart so the boundary is exact. An over-long row
    keeps the response's start (at least half the budget) and the prompt's end, so the
    "### Response:" marker stays next to the response.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out, truncated = [], 0
    for instr, inp, resp in zip(rows.instruction, rows.input, rows.output):
        p = ([bos] if add_bos and bos is not None else []) + tokenizer.encode(prompt_text(instr, inp), add_special_tokens=False)
        r = tokenizer.encode(resp, add_special_tokens=False) + ([eos] if eos is not None else [])
        if len(p) + len(r) > max_length:
            truncated += 1
            keep_r = min(len(r), max(max_length - len(p), max_length // 2))
            p, r = p[len(p) - (max_length - keep_r):], r[:keep_r]
        out.append(Example(p + r, len(p)))
    return out, truncated


def collate(batch: list[Example], pad_id: int):
    """Right-padded input ids, attention mask and labels (IGNORE on prompt and padding)."""
    import torch

    n = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
        labels[i, e.n_prompt : len(e.ids)] = torch.tensor(e.ids[e.n_prompt :])
    return ids, mask, labels


def _autocast(device: str):
    import torch

    # bfloat16 compute on CUDA with float32 master weights; float32 on CPU (half is slow there).
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()


def _batch_nll(model, batch: list[Example], pad_id: int, device: str):
    """Summed negative log-likelihood of the batch's response tokens, and their count."""
    import torch.nn.functional as F

    ids, mask, labels = (t.to(device) for t in collate(batch, pad_id))
    with _autocast(device):
        logits = model(input_ids=ids, attention_mask=mask).logits
    # Position t predicts token t + 1.
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return nll, int((labels != IGNORE).sum())


def response_loss(model, examples: list[Example], *, pad_id: int, device: str = "cpu", batch_size: int = 16,
                  progress: bool = False, desc: str = "eval") -> float:
    """Mean negative log-likelihood per response token over all examples (token-weighted)."""
    import torch
    from tqdm import tqdm

    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))  # similar lengths share a batch
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, file=sys.stderr, leave=False):
            nll, n = _batch_nll(model, [examples[i] for i in order[s : s + batch_size]], pad_id, device)
            total, count = total + float(nll), count + n
    if count == 0:
        raise SelectrayError("the held-out rows have no response tokens to score")
    return total / count


def train(model, examples: list[Example], *, steps: int, lr: float, batch_size: int, seed: int, pad_id: int,
          device: str = "cpu", progress: bool = False, desc: str = "train") -> list[float]:
    """Fine-tune in place: AdamW, linear warm-up then linear decay, batches from seeded epochs
    (each a permutation of the examples). Returns the per-step training losses."""
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    epochs = math.ceil(steps * batch_size / len(examples))
    order = np.concatenate([rng.permutation(len(examples)) for _ in range(epochs)])
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else (steps - s) / (steps - warm + 1))
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, file=sys.stderr, leave=False)
    for step in bar:
        nll, n = _batch_nll(model, [examples[i] for i in order[step * batch_size : (step + 1) * batch_size]], pad_id, device)
        loss = nll / max(n, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, list[float] | None]:
    """Mean and two-sided Student-t confidence interval (sample std, n - 1 degrees of freedom);
    no interval for a single value."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, [mean - half, mean + half]


def random_subset(n_candidates: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct positions out of `n_candidates`, drawn with `seed` (sorted)."""
    if size > n_candidates:
        raise SelectrayError(f"the pool has {n_candidates} usable rows with a response, fewer than the selection's {size}")
    return np.sort(np.random.default_rng(seed).choice(n_candidates, size=size, replace=False))


def comparison_candidates(run: FinishedRun, pool: list[str] | None = None) -> tuple[TextRows, TextRows]:
    """The rows a random comparison draws from (the run's usable input rows that have a
    response), and every input row of the run (to keep held-out rows out of it)."""
    rows, usable = run.pool(pool)
    eligible = rows.trainable()
    return rows.take(eligible[usable[eligible]]), rows


def held_out(rows: TextRows, pools: list[TextRows]) -> tuple[np.ndarray, dict[str, int]]:
    """Positions of eval rows usable as held-out rows, and the dropped ones by reason:
    `in_pool` (its id or its whitespace-normalised text is a pool row's), `missing_output`,
    `empty_instruction`."""
    ids = {i for p in pools for i in p.ids if i is not None}
    keys = {content_key(*t) for p in pools for t in zip(p.instruction, p.input, p.output)}
    trainable = set(rows.trainable().tolist())
    keep, dropped = [], {}
    for i, (rid, a, b, c) in enumerate(zip(rows.ids, rows.instruction, rows.input, rows.output)):
        if (rid is not None and rid in ids) or content_key(a, b, c) in keys:
            reason = "in_pool"
        elif i not in trainable:
            reason = "empty_instruction" if not (isinstance(a, str) and a.strip()) else "missing_output"
        else:
            keep.append(i)
            continue
        dropped[reason] = dropped.get(reason, 0) + 1
    return np.array(keep, dtype=np.int64), dropped


def _check(steps: int, lr: float, batch_size: int, max_length: int, seeds: int, max_eval_rows: int | None,
           device: str) -> None:
    for name, value, low in (("--steps", steps, 1), ("--batch-size", batch_size, 1), ("--max-length", max_length, 8),
                             ("--seeds", seeds, 1), ("--max-eval-rows", max_eval_rows, 1)):
        if value is not None and value < low:
            raise SelectrayError(f"{name} must be at least {low}, got {value}")
    if not (lr > 0 and math.isfinite(lr)):
        raise SelectrayError(f"--lr must be a positive number, got {lr}")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise SelectrayError(f"--device must be auto, cpu or cuda[:N], got '{device}'")
    if device.startswith("cuda") and not cuda_available():
        raise SelectrayError(f"--device {device}: torch sees no CUDA device here")


def run_eval(selected: str, eval_file: str, *, against: str = "random", model: str = "smollm2-135m", seeds: int = 3,
             steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
             max_length: int = DEFAULTS["max_length"], max_eval_rows: int | None = None, pool: list[str] | None = None,
             device: str = "auto", progress: bool = True, log=print) -> dict:
    """Train on the selection and on the comparison for each seed, score both on the held-out
    rows, write OUT/eval.json and return it (see the README's "Reading the results")."""
    start = time.perf_counter()
    _check(steps, lr, batch_size, max_length, seeds, max_eval_rows, device)
    run = FinishedRun(selected)
    sel = text_rows(run.selected(), run.columns)
    sel_skipped = len(sel) - len(sel.trainable())
    sel = sel.take(sel.trainable())
    if not len(sel):
        raise SelectrayError(f"{selected}: no selected row has both an instruction and a response to train on")
    candidates, pool_rows = comparison_candidates(run, pool)
    pools = [pool_rows]
    if against == "random":
        random_subset(len(candidates), len(sel), 0)  # fails early when the pool is too small
        comp_name, comp_fixed = "random", None
    else:
        other = FinishedRun(against)
        comp_fixed = text_rows(other.selected(), other.columns)
        comp_fixed = comp_fixed.take(comp_fixed.trainable())
        if not len(comp_fixed):
            raise SelectrayError(f"{against}: no selected row has both an instruction and a response to train on")
        if other.report.get("input") != run.report.get("input"):
            pools.append(other.pool()[0])
        comp_name = against

    table, bad_lines = drop_rejected_lines(read_rows_file(eval_file))
    for need in (run.columns.instruction, run.columns.output):
        if need not in table.column_names:
            raise SelectrayError(f"{eval_file} has no column '{need}' (columns: {', '.join(table.column_names)})")
    ev = text_rows(table, run.columns)
    keep, dropped = held_out(ev, pools)
    if bad_lines:
        dropped["bad_line"] = bad_lines
    if max_eval_rows is not None:
        keep = keep[:max_eval_rows]
    if not len(keep):
        raise SelectrayError(f"{eval_file}: no held-out rows left (of {len(ev)}: {dropped or 'none'} dropped)")
    ev = ev.take(keep)

    from selectray.models import load_model

    loaded = load_model(model, device=device, dtype="float32")
    tok, net, dev = loaded.tokenizer, loaded.model, str(loaded.model.device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    log(f"[eval] {loaded.name} on {dev}: {len(sel)} selected rows vs {comp_name}, {len(ev)} held-out rows "
        f"({sum(dropped.values())} dropped: {dropped or 'none'}), {seeds} seed(s) x {steps} steps")
    enc = lambda rows: encode(tok, rows, max_length, loaded.add_bos)  # noqa: E731
    ev_ex, ev_trunc = enc(ev)
    score = {"pad_id": pad_id, "device": dev, "batch_size": 2 * batch_size, "progress": progress}
    fit = {"steps": steps, "lr": lr, "batch_size": batch_size, "pad_id": pad_id, "device": dev, "progress": progress}
    base_loss = response_loss(net, ev_ex, desc="eval base", **score)
    base_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    sel_ex, sel_trunc = enc(sel)
    comp_ex, comp_trunc = enc(comp_fixed) if comp_fixed is not None else ([], 0)
    losses = {"selection": [], "comparison": []}
    seed_list = list(range(seeds))
    for seed in seed_list:
        if comp_fixed is None:
            comp_ex, trunc = enc(candidates.take(random_subset(len(candidates), len(sel), seed)))
            comp_trunc = max(trunc, comp_trunc)  # the most over the seeds' subsets
        for part, examples in (("selection", sel_ex), ("comparison", comp_ex)):
            net.load_state_dict(base_state)
            train(net, examples, seed=seed, desc=f"seed {seed} train {part}", **fit)
            losses[part].append(response_loss(net, ev_ex, desc=f"seed {seed} eval {part}", **score))
        log(f"[eval] seed {seed}: selection {losses['selection'][-1]:.4f}, {comp_name} {losses['comparison'][-1]:.4f}")
    net.load_state_dict(base_state)

    diff_mean, ci = t_interval([a - b for a, b in zip(losses["selection"], losses["comparison"])])
    result = {
        "model": model,
        "eval_file": str(eval_file),
        "eval_rows": len(ev),
        "dropped_eval_rows": int(sum(dropped.values())),
        "dropped_eval_by_reason": dropped,
        "seeds": seed_list,
        "steps": steps,
        "hyper": {"lr": lr, "batch_size": batch_size, "max_length": max_length, "optimizer": "AdamW",
                  "weight_decay": 0.0, "grad_clip": 1.0, "warmup_steps": max(1, steps // 10),
                  "schedule": "linear warm-up, then linear decay to 0", "device": dev,
                  "dtype": "bfloat16 autocast" if dev.startswith("cuda") else "float32",
                  "prompt_template": PROMPT_TEMPLATE, "loss": "mean NLL per response token (EOS included)"},
        "base_loss": base_loss,
        "selection": {"name": str(selected), "rows": len(sel), "skipped_rows": sel_skipped,
                      "loss": losses["selection"], "mean": float(np.mean(losses["selection"]))},
        "comparison": {"name": comp_name, "rows": len(sel) if comp_fixed is None else len(comp_fixed),
                       "loss": losses["comparison"], "mean": float(np.mean(losses["comparison"]))},
        "difference": {"mean": diff_mean, "ci95": ci},
        "truncated_rows": {"eval": ev_trunc, "selection": sel_trunc, "comparison": comp_trunc},
        "seconds": time.perf_counter() - start,
    }
    if ci is None:
        result["difference"]["note"] = "one seed: no confidence interval"
    (run.out / "eval.json").write_json(result)
    return result

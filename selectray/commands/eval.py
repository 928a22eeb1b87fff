"""`selectray eval`: fine-tune a small LM on the selection and on a comparison set, compare held-out loss."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "does the selection train a better model? fine-tune on it and on a comparison set, compare held-out loss"
DESCRIPTION = (
    "Fine-tune a small causal LM (default: the bundled smollm2-135m) on OUT's selection and, with the same "
    "seed, steps and hyper-parameters, on a comparison set (a fresh random subset of the run's usable pool "
    "of the same size per seed, or another run's selection), then compare their mean response-token loss on "
    "held-out rows (--eval; rows found in the pool are dropped and counted). Writes OUT/eval.json."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from selectray.evaluate import DEFAULTS

    p.add_argument("--selected", required=True, metavar="OUT", help="output directory of a finished run")
    p.add_argument("--against", default="random", metavar="random|OUT2",
                   help="comparison: 'random' (default) or another finished run's output directory")
    p.add_argument("--eval", required=True, metavar="FILE", help="held-out rows, Parquet or JSONL, same columns as the pool")
    p.add_argument("--model", default="smollm2-135m", metavar="SPEC",
                   help="model to fine-tune: a built-in name, a .gguf file or a Hugging Face directory (default smollm2-135m)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help=f"training steps per run (default {DEFAULTS['steps']})")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help=f"peak learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help=f"rows per step (default {DEFAULTS['batch_size']})")
    p.add_argument("--max-length", type=int, default=DEFAULTS["max_length"],
                   help=f"token limit of a row, prompt + response (default {DEFAULTS['max_length']})")
    p.add_argument("--max-eval-rows", type=int, help="score only the first N held-out rows")
    p.add_argument("--pool", nargs="+", help="the run's input files, when its recorded `input` paths do not resolve here")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from selectray.evaluate import run_eval

    r = run_eval(args.selected, args.eval, against=args.against, model=args.model, seeds=args.seeds, steps=args.steps,
                 lr=args.lr, batch_size=args.batch_size, max_length=args.max_length, max_eval_rows=args.max_eval_rows,
                 pool=args.pool, device=args.device, progress=not args.quiet)
    d = r["difference"]
    ci = f"95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d["ci95"] else "one seed: no interval"
    print(f"held-out response loss on {r['eval_rows']} rows: base {r['base_loss']:.4f}, selection "
          f"{r['selection']['mean']:.4f}, {r['comparison']['name']} {r['comparison']['mean']:.4f}; "
          f"difference {d['mean']:+.4f} ({ci}), {r['seconds']:.0f} s")
    print(f"outputs: {args.selected.rstrip('/')}/eval.json")
    _rebuild_report(args.selected)
    return 0


def _rebuild_report(out: str) -> None:
    """Put the evaluation into OUT's report (rebuilt from OUT/report_data/, which reads eval.json)."""
    from selectray.errors import InputError
    from selectray.report.assemble import render
    from selectray.report.data import read_data
    from selectray.storage import Location

    try:
        data = read_data(out)
    except InputError as e:  # a run from before rebuildable reports: eval.json stands alone
        print(f"report not rebuilt: {e}")
        return
    render(Location(out), data, source=Location(out))
    print(f"report rebuilt with the evaluation: {out.rstrip('/')}/report.html")

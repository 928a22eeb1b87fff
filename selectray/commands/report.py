"""`selectray report`: rebuild a finished run's report from its files, or compare runs."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "rebuild report.json/report.html of a finished run from its files (no Ray, no models), or compare runs"
DESCRIPTION = ("Rebuild the report of a finished run from OUT/report_data/ (and OUT/eval.json when present), "
               "or, with --compare, set several runs side by side in compare.html and compare.json: counts, "
               "statistics, coverage, the overlap of their selections and the rows one chose and another did not.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output directory of a finished run")
    p.add_argument("--compare", nargs="+", metavar="OUT2", default=[], help="other finished runs to compare with OUT")
    p.add_argument("--output", metavar="DIR", help="where to write the report (default: OUT)")


def main(args: argparse.Namespace) -> int:
    from selectray.report.assemble import render
    from selectray.report.data import read_data
    from selectray.storage import Location

    out = Location(args.out)
    target = Location(args.output) if args.output else out
    if args.compare:
        from selectray.report.compare import write_compare

        result = write_compare([out, *map(Location, args.compare)], target)
        for o in result["overlap"]:
            print(f"{o['a']} vs {o['b']}: {o['both']:,} chosen by both, {o['only_a']:,} only by the first, "
                  f"{o['only_b']:,} only by the second")
        print(f"outputs: {target}/compare.html, compare.json")
        return 0
    data = read_data(out)
    target.mkdir()
    report = render(target, data, source=out)
    print(f"{report['input_rows']:,} input rows = {report['selected']:,} selected + {report['not_selected']:,} not selected "
          f"+ {report['rejected']:,} rejected\noutputs: {target}/report.json, report.html")
    return 0

"""`astrofm quickstart --out DIR [--n N]`: the main job, end to end, on the built-in mock universe.

Generates the observed survey and the simulated suites, pretrains the `tiny` recipe on the observed
survey, embeds it, builds a similarity-search index, and runs the retrieval, regression (redshift,
stellar mass, sSFR) and misspecification studies; prints a summary table and writes DIR/summary.json
and DIR/report.md (which links every plot). The steps live in astrofm/cli/quickstart_steps.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from astrofm.cli.quickstart_steps import SHIPPED_SUITES, QuickstartConfig

DEFAULTS = QuickstartConfig(out="")  # one source for the defaults: the config dataclass


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="run the main job end to end on the mock universe",
        description="Generate a mock survey and simulated suites, pretrain tiny encoders, embed, index, and "
                    "report retrieval, regression of redshift, stellar mass and sSFR, and the simulation-vs-observation study "
                    "(DIR/report.md). The default size takes about 10 minutes on 2 cores.")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    parser.add_argument("--n", type=int, default=DEFAULTS.n,
                        help=f"objects in the observed survey (default {DEFAULTS.n})")
    parser.add_argument("--n-simulated", type=int, metavar="N",
                        help="objects per simulated suite (default: half of --n, at most 2500)")
    parser.add_argument("--suites", nargs="+", default=list(SHIPPED_SUITES), metavar="SUITE",
                        help="simulated suites (configs/mock/NAME.yaml or a YAML path; default: "
                             f"{' '.join(SHIPPED_SUITES)})")
    parser.add_argument("--no-control", action="store_true",
                        help="leave out the control suite (observed physics, another seed)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                        help=f"pretraining epochs at most (default {DEFAULTS.epochs})")
    parser.add_argument("--max-minutes", type=float, default=DEFAULTS.max_minutes,
                        help=f"pretraining wall-time limit in minutes (default {DEFAULTS.max_minutes:g}; 0: no limit)")
    parser.add_argument("--recipe", default=DEFAULTS.recipe,
                        help="pretraining recipe (default configs/pretrain/tiny.yaml)")
    parser.add_argument("--spectrum-terms", action="store_true",
                        help="keep the recipe's masked-spectrum and spectrum self-view terms (off by default: "
                             "in a 7-minute run they cost cross-modal retrieval)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, help="generator and loader processes (default: up to 2)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.cli import quickstart_steps as steps

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    options = {"workers": args.workers} if args.workers else {}
    config = steps.QuickstartConfig(out=str(out), n=args.n, n_simulated=args.n_simulated, suites=list(args.suites),
                                    control=not args.no_control, epochs=args.epochs,
                                    max_minutes=args.max_minutes or None, recipe=args.recipe,
                                    spectrum_terms=args.spectrum_terms, seed=args.seed,
                                    **options)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 1)
        clock = now

    print(f"[1/6] generating the observed survey ({config.n} objects) and the simulated suites")
    observed, simulated, summary = steps.generate_surveys(config)
    lap("mock")
    print(f"\n[2/6] pretraining {Path(config.recipe).stem} on the observed survey")
    model = steps.pretrain(config, observed)
    extent = steps.pretraining_extent(config, model)
    lap("pretrain")
    print("\n[3/6] embedding every split, building a spectrum index, one search")
    embeddings, _, search_table = steps.embed_and_index(config, model, observed)
    lap("embed_index")
    print("\n[4/6] cross-modal retrieval on the test split")
    retrieval = steps.retrieval(config, embeddings)
    lap("retrieval")
    print("\n[5/6] redshift, stellar mass and sSFR regression on frozen embeddings")
    regression = steps.regression(config, embeddings)
    lap("regression")
    print("\n[6/6] simulation against observation: two-sample tests, model comparison, coverage")
    misspec = steps.misspecification(config, model, observed, simulated)
    lap("misspec")
    timings["total"] = round(sum(timings.values()), 1)

    rows = steps.headline(retrieval, regression, misspec, extent)
    report = steps.write_markdown(config, rows, search_table, timings)
    result = {"objects": summary["objects"], "splits": summary["splits"], "verify_ok": summary["verify"]["ok"],
              "model": str(model), "pretraining": extent, "simulated": {name: str(path) for name, path in simulated.items()},
              "test_retrieval": retrieval["pairs"], "regression": regression["summary"],
              "misspec": {"suites": misspec["suites"], "uncovered_fraction": misspec["uncovered_fraction"]},
              "timings_s": timings, "report": str(report)}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + steps.format_headline(rows))
    print(f"\nquickstart finished in {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')})")
    print(f"report: {report}")
    return 0 if summary["verify"]["ok"] else 1

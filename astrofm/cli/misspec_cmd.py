"""`astrofm misspec --model MODEL_DIR --observed DATA_DIR --simulated NAME=DATA_DIR ... --out REPORT_DIR`:
simulated suites against observations in the embedding space of a model pretrained on the observed data:
classifier two-sample tests, model comparison, coverage and what differs; metrics.json, PNG plots,
observed_objects.csv and report.md."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "misspec", help="simulation vs observation on embeddings: two-sample tests, model comparison, coverage",
        description="Embed the observed dataset's val and test splits (never seen in pretraining) and every "
                    "split of each simulated suite; per suite, a cross-fitted classifier two-sample test "
                    "(held-out ROC AUC, permutation p-value, bootstrap 95% interval), kNN coverage both ways "
                    "and the labels that differ for flagged objects; across suites, posterior model "
                    "probabilities of the observed objects from a classifier trained on the suites only. "
                    "Objects are split into halves by object index, so a same-seed simulated twin never "
                    "straddles training and testing.")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR",
                        help="exported model folder, pretrained on the observed dataset's train split")
    parser.add_argument("--observed", required=True, metavar="DATA_DIR", help="the observed dataset folder")
    parser.add_argument("--simulated", required=True, nargs="+", metavar="NAME=DATA_DIR",
                        help="simulated suites, each as NAME=DATA_DIR")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to write")
    parser.add_argument("--modality", default="concat",
                        help="a model modality, or 'concat' (default): every modality joined, objects having "
                             "them all, so a deviation seen by any one encoder counts")
    parser.add_argument("--classifier", choices=["logistic", "mlp"], default="logistic",
                        help="two-sample and model-comparison classifier (default: logistic)")
    parser.add_argument("--seed", type=int, default=0, help="halves, subsampling, classifiers, resampling (default 0)")
    parser.add_argument("--permutations", type=int, default=1000, metavar="B",
                        help="label permutations for the p-values (default 1000)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                        help="bootstrap resamples for the AUC intervals (default 1000)")
    parser.add_argument("--k", type=int, default=10, help="neighbour rank of the coverage distances (default 10)")
    parser.add_argument("--coverage-level", type=float, default=0.95, metavar="L",
                        help="conformal level of the coverage test (default 0.95)")
    parser.add_argument("--flagged-fraction", type=float, default=0.2, metavar="F",
                        help="share of each suite's objects flagged as most 'simulated' (default 0.2)")
    parser.add_argument("--max-objects", type=int, default=None, metavar="N",
                        help="per dataset, a seeded subsample after embedding (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="embedding batch size (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from downstream.misspec import MisspecConfig, format_table, parse_named, write_report

    config = MisspecConfig(model=args.model, observed=args.observed, simulated=parse_named(args.simulated),
                           out=args.out, modality=args.modality, seed=args.seed, overwrite=args.overwrite,
                           classifier=args.classifier, n_permutations=args.permutations,
                           n_bootstrap=args.bootstrap, k=args.k, coverage_level=args.coverage_level,
                           flagged_fraction=args.flagged_fraction, max_objects=args.max_objects,
                           batch_size=args.batch_size, progress=not args.no_progress)
    out = write_report(config)
    import json

    print(format_table(json.loads((out / "metrics.json").read_text())))
    print(f"report written to {out}")
    return 0

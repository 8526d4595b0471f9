"""What a mock suite's noiseless catalogue holds about redshift, before any survey is rendered or encoder trained.

    python benchmarks/bench_mock_ceiling.py [--suite observed] [--n 20000] [--seed 0] [--mag-limit-r 19.5]

Draws the suite's true catalogue (the same objects, ids and splits as `astrofm data mock --suite S --n N
--seed SEED`, without images, spectra or noise: a few minutes for 20,000 objects instead of tens) and fits
the MLP probe of `astrofm regress` (train split, early stopping on val, metrics on test) from exact columns
to the target. Prints ONE JSON object with, per column set, the test R^2, NMAD and outlier fraction:

    image         the exact fluxes in the image bands (g, r, z by default) and the light profile: no image
                  encoder can know more
    image_fluxes  those fluxes alone: what the colours and brightness hold without the shape
    photometry    the exact fluxes in the photometry bands (g, r, z, W1, W2 by default)

    image_with_extra_filters  (with --extra-filters) the `image` columns plus the exact fluxes through those
                  speclite filters: what images in more bands would hold, e.g. decam2014-i decam2014-Y
                  (configs/mock/observed_griz.yaml renders such a survey: its own `image` ceiling has i)

An image-redshift target above the `image` ceiling asks for information the suite's images do not hold.
--mag-limit-r draws a brighter (or fainter) selection of the same universe, e.g. 19.5 for a sample like
the DESI bright-galaxy survey that AstroCLIP's image figures come from (configs/mock/bright_griz.yaml is that
cut of observed_griz, to generate and pretrain on).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="observed", help="suite name (configs/mock) or YAML path")
    parser.add_argument("--n", type=int, default=20000, help="objects (default 20000, the issue's survey size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mag-limit-r", type=float, default=None,
                        help="replace the suite's apparent r magnitude limit (a brighter or fainter selection)")
    parser.add_argument("--extra-filters", nargs="+", default=[], metavar="FILTER",
                        help="speclite filters (e.g. decam2014-i decam2014-Y) whose exact fluxes join the image "
                             "columns in one more ceiling, image_with_extra_filters")
    parser.add_argument("--target", default="redshift")
    parser.add_argument("--seeds", type=int, default=1, help="MLP probe seeds per column set (default 1)")
    args = parser.parse_args()

    import numpy as np

    from astrofm.sims.generate import truth_catalogue
    from astrofm.sims.suite import load_suite
    from downstream.regression.ceiling import catalogue_ceilings, ceiling_columns

    suite = load_suite(args.suite)
    if args.mag_limit_r is not None:
        suite = dataclasses.replace(suite, population=dataclasses.replace(suite.population,
                                                                          mag_limit_r=args.mag_limit_r))
    start = time.perf_counter()
    catalogue = truth_catalogue(suite, args.n, args.seed, extra_filters=args.extra_filters)
    drawn = time.perf_counter() - start
    columns = ceiling_columns(suite.observing.image_bands, suite.observing.photometry_bands)
    if args.extra_filters:
        columns["image_with_extra_filters"] = (*columns["image"],
                                               *(f"flux_true_{name}" for name in args.extra_filters))
    ceilings = catalogue_ceilings(catalogue, args.target, columns, args.seeds, where=f"suite {suite.name}")
    target = catalogue[args.target]
    print(json.dumps({
        "benchmark": "mock_ceiling", "suite": suite.name, "n": args.n, "seed": args.seed,
        "mag_limit_r": suite.population.mag_limit_r, "image_bands": suite.observing.image_bands,
        "photometry_bands": suite.observing.photometry_bands, "extra_filters": args.extra_filters, "target": args.target,
        "target_mean": round(float(np.mean(target)), 4), "target_std": round(float(np.std(target)), 4),
        "ceilings": {name: {"columns": entry["columns"], "n_train": entry["n_train"], "n_test": entry["n_test"],
                            **{key: round(value, 4) for key, value in entry["mean"].items()},
                            "r2_std_over_seeds": round(entry["std"]["r2"], 4)}
                     for name, entry in ceilings.items()},
        "seconds_catalogue": round(drawn, 1), "seconds_total": round(time.perf_counter() - start, 1),
    }, indent=1))


if __name__ == "__main__":
    main()

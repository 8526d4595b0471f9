"""`astrofm data ingest`: survey files (SDSS spectra, FITS cut-outs, a photometry catalogue) into a
sharded dataset, joined by object id. Every input is checked before anything is written; bad input
stops the run with a message naming the file, the object and the field, unless --skip-bad."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
object ids: a spectrum's and a cut-out's id is its file stem (spec-0266-51602-0001 for
  spec-0266-51602-0001.fits); a catalogue row's is its --id-column. Name cut-outs after the
  spectrum stem to join them.
spectra: SDSS DR8+ spec files, HDU COADD (flux, loglam, ivar); SPECOBJ (Z, CLASS, Z_ERR, ZWARNING)
  gives the labels redshift, spectral_class, redshift_err, zwarning.
images: a C x H x W cube (bands from the BANDS keyword, optional IVAR HDU), or one HDU per band
  named after it (optional IVAR_<band> HDUs).
catalogue: CSV or Parquet with columns <id>, flux_<band>, flux_err_<band> in nanomaggies.
"""


def _names(values: list[str] | None) -> list[str] | None:
    """`g,r,z`, `g r z` and `g,r z` all mean the same list."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest survey files (SDSS spectra, FITS cut-outs, catalogues) into a dataset",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    parser.add_argument("--spectra", nargs="+", action="extend", default=[], metavar="FILE",
                        help="SDSS spec-*.fits files, or folders of them")
    parser.add_argument("--images", nargs="+", action="extend", default=[], metavar="FILE",
                        help="FITS cut-outs, or folders of them")
    parser.add_argument("--catalog", metavar="FILE", help="photometry catalogue, CSV or Parquet")
    parser.add_argument("--id-column", default="id", help="catalogue column with the object id (default: id)")
    parser.add_argument("--bands", nargs="+", metavar="BAND",
                        help="photometry bands, e.g. g,r,z (default: g,r,z,W1,W2)")
    parser.add_argument("--filters", nargs="+", metavar="FILTER",
                        help="speclite filter per photometry band (default: decam2014-g/r/z, wise2010-W1/W2)")
    parser.add_argument("--image-bands", nargs="+", metavar="BAND", help="cut-out bands (default: g,r,z)")
    parser.add_argument("--image-size", type=int, default=32, metavar="N", help="stamp side in pixels (default: 32)")
    parser.add_argument("--pixel-scale", type=float, default=0.262, metavar="ARCSEC",
                        help="cut-out pixel scale the headers must agree with (default: 0.262)")
    parser.add_argument("--survey", help="meta 'survey' of every object (default: sdss for objects with a spectrum)")
    parser.add_argument("--name", help="dataset name (default: the folder name)")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="K", help="objects per shard (default: 1000)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave bad inputs out, list them in DIR/rejects.json, and ingest the rest")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds a dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.data.ingest import REJECTS_NAME, IngestConfig, ingest

    image_bands = _names(args.image_bands)
    config = IngestConfig(
        out=args.out, spectra=args.spectra, images=args.images, catalog=args.catalog,
        id_column=args.id_column, bands=_names(args.bands), filters=_names(args.filters),
        image_size=args.image_size, pixel_scale=args.pixel_scale, survey=args.survey, name=args.name,
        skip_bad=args.skip_bad, overwrite=args.overwrite, shard_size=args.shard_size,
        **({"image_bands": image_bands} if image_bands else {}),
    )
    result = ingest(config, progress=not args.no_progress and sys.stderr.isatty())
    counts = {}
    for per_split in result.manifest.modality_counts.values():
        for modality, n in per_split.items():
            counts[modality] = counts.get(modality, 0) + n
    detail = ", ".join(f"{modality} {n}" for modality, n in counts.items())
    print(f"ingested {result.count} objects ({detail}) into {result.path}")
    if config.skip_bad:
        print(f"rejected {len(result.rejected_objects)} objects ({len(result.rejects)} problems); "
              f"see {result.path / REJECTS_NAME}")
    return 0

"""A dataset's summary: counts per split and modality, the schema, and optionally checksum results."""

from __future__ import annotations

from typing import Any

from astrofm.data.format import OPTIONAL_ARRAYS
from astrofm.data.reader import Dataset


def summarize(dataset: Dataset, verify: bool = False) -> dict[str, Any]:
    manifest = dataset.manifest
    summary: dict[str, Any] = {
        "path": str(dataset.path),
        "name": manifest.name,
        "format_version": manifest.format_version,
        "created": manifest.created,
        "objects": manifest.count(),
        "splits": {split: {"objects": manifest.count(split), "shards": len(shards),
                           "modalities": manifest.modality_counts.get(split, {}),
                           **({} if manifest.optional_array_counts is None else
                              {"optional_arrays": manifest.optional_array_counts.get(split, {})})}
                   for split, shards in manifest.splits.items()},
        "modalities": manifest.spec.to_dict(),
        "labels": manifest.labels,
        "provenance": {k: v for k, v in manifest.provenance.items() if k in ("generator", "suite", "seed", "n",
                                                                           "astrofm_version", "domain")},
    }
    if verify:
        problems = dataset.verify()
        summary["verify"] = {"ok": not problems, "problems": [str(p) for p in problems]}
    return summary


def _spec_line(modality: str, spec: dict[str, Any]) -> str:
    if modality == "spectrum":
        return (f"{spec['n_pixels']} pixels, {spec['wave_min']:g}-{spec['wave_max']:g} A "
                f"step {spec['wave_step']:g} A, flux in {spec['flux_unit']}")
    if modality == "photometry":
        bands = ", ".join(f"{b} ({f})" for b, f in zip(spec["bands"], spec["filters"], strict=True))
        return f"bands {bands}, flux in {spec['flux_unit']}"
    return (f"bands {','.join(spec['bands'])}, {spec['size']}x{spec['size']} px at "
            f"{spec['pixel_scale']:g}\"/px, {spec['flux_unit']}")


def format_summary(summary: dict[str, Any]) -> str:
    modalities = list(summary["modalities"])
    lines = [f"dataset {summary['name']}  ({summary['path']}, format v{summary['format_version']})",
             f"objects: {summary['objects']}", ""]
    header = f"{'split':<8}{'objects':>9}{'shards':>8}" + "".join(f"{m:>12}" for m in modalities)
    lines.append(header)
    lines.append("-" * len(header))
    for split, entry in summary["splits"].items():
        lines.append(f"{split:<8}{entry['objects']:>9}{entry['shards']:>8}"
                     + "".join(f"{entry['modalities'].get(m, 0):>12}" for m in modalities))
    lines.append("")
    lines.append("modalities:")
    lines.extend(f"  {m:<11}{_spec_line(m, spec)}" for m, spec in summary["modalities"].items())
    lines.extend(_optional_array_lines(summary))
    labels = ", ".join(f"{name} ({kind})" for name, kind in summary["labels"].items())
    lines.append(f"labels: {labels or 'none'}")
    if summary["provenance"]:
        lines.append("provenance: " + ", ".join(f"{k}={v}" for k, v in summary["provenance"].items()))
    if "verify" in summary:
        verdict = summary["verify"]
        lines.append("")
        lines.append("verify: all shards match their checksums" if verdict["ok"]
                     else "verify: FAILED\n" + "\n".join(f"  {p}" for p in verdict["problems"]))
    return "\n".join(lines)


def _optional_array_lines(summary: dict[str, Any]) -> list[str]:
    """'  image ivar: held by 3 of 5 (...)' where some objects lack an optional array (a missing image ivar is
    collated as unit weight); nothing when all hold it or the manifest predates the count."""
    entries = list(summary["splits"].values())
    if not all("optional_arrays" in entry for entry in entries):
        return []
    lines = []
    for modality, arrays in OPTIONAL_ARRAYS.items():
        if modality not in summary["modalities"]:
            continue
        total = sum(entry["modalities"].get(modality, 0) for entry in entries)
        for name in arrays:
            held = sum(entry["optional_arrays"].get(f"{modality}.{name}", 0) for entry in entries)
            if held < total:
                lines.append(f"  {modality} {name}: held by {held} of {total} (the rest taken as unit weight)")
    return lines

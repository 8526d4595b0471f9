"""Photometry catalogues: CSV or Parquet, one row per object.

Column convention (names matched exactly, else case-insensitively):
- the id column (`id` unless configured), read as text so ids like `0007` or `spec-0266-51602-0001`
  survive unchanged; integer ids in Parquet become their decimal text;
- per band `flux_<band>` and `flux_err_<band>` (e.g. `flux_g`, `flux_err_g`, `flux_W1`), in
  nanomaggies (AB magnitude 22.5 - 2.5 log10 flux), the Legacy Surveys unit.
Other columns are ignored. Every configured band needs both columns: a band a catalogue lacks is an
error naming the column, unless the user chose the bands (and so left it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astrofm.data.format import DataValidationError

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class PhotometryTable:
    """A checked catalogue: ids and (rows x bands) arrays; `row(i)` checks one object's values."""

    path: Path
    id_column: str
    bands: list[str]
    columns: dict[str, list[str]]  # "flux" / "flux_err" -> the file's column name per band
    ids: list[str | None]
    flux: np.ndarray  # (rows, bands), NaN where a value is missing
    flux_err: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, index: int) -> tuple[str, dict[str, np.ndarray]]:
        """(object id, photometry) of row `index`; raises DataValidationError for a bad value."""
        object_id = self.ids[index]
        if not object_id:
            raise DataValidationError(f"row {index + 1}: empty object id", file=str(self.path),
                                      field=self.id_column)
        for kind, values in (("flux", self.flux), ("flux_err", self.flux_err)):
            for band_index, column in enumerate(self.columns[kind]):
                value = values[index, band_index]
                if not np.isfinite(value):
                    shown = "missing" if np.isnan(value) else value
                    raise DataValidationError(f"row {index + 1}: value is {shown} (NaN, inf and empty "
                                              f"cells are not allowed)", file=str(self.path),
                                              object_id=object_id, field=column)
                if kind == "flux_err" and value < 0:
                    raise DataValidationError(f"row {index + 1}: negative uncertainty {value}",
                                              file=str(self.path), object_id=object_id, field=column)
        return object_id, {"flux": self.flux[index].copy(), "flux_err": self.flux_err[index].copy()}


def read_catalog(path: str | Path, bands: list[str], id_column: str = "id") -> PhotometryTable:
    """Read and check the columns of a CSV or Parquet catalogue; raises DataValidationError for a
    problem of the whole file (unreadable, a missing or non-numeric column). Row values are checked by
    `PhotometryTable.row`, so that `--skip-bad` can reject single rows."""
    import pyarrow as pa  # here, not at import time: only a catalogue ingest needs it

    path = Path(path)
    table = _read_table(path, id_column)
    names = table.column_names
    id_name = _match(names, id_column)
    if id_name is None:
        raise DataValidationError(f"no id column {id_column!r} (columns: {names}); set it with --id-column",
                                  file=str(path), field=id_column)
    ids = _ids(path, table.column(id_name), id_name)
    columns: dict[str, list[str]] = {"flux": [], "flux_err": []}
    arrays: dict[str, list[np.ndarray]] = {"flux": [], "flux_err": []}
    for band in bands:
        for kind in ("flux", "flux_err"):
            wanted = f"{kind}_{band}"
            name = _match(names, wanted)
            if name is None:
                raise DataValidationError(
                    f"no column {wanted!r} for band {band!r} (photometry needs flux_<band> and "
                    f"flux_err_<band> for every band; choose the bands with --bands)", file=str(path), field=wanted)
            column = table.column(name)
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or pa.types.is_null(column.type)):
                raise DataValidationError(f"column type is {column.type}, expected numbers", file=str(path),
                                          field=name)
            columns[kind].append(name)
            arrays[kind].append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    empty = np.zeros((len(ids), 0))
    return PhotometryTable(
        path=path, id_column=id_name, bands=list(bands), columns=columns, ids=ids,
        flux=np.stack(arrays["flux"], axis=1) if bands else empty,
        flux_err=np.stack(arrays["flux_err"], axis=1) if bands else empty,
    )


def _read_table(path: Path, id_column: str):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return pq.read_table(path)
        # The id column is read as text, so that `0007` stays `0007` and `NA` is an id, not a null.
        options = pacsv.ConvertOptions(column_types={id_column: pa.string()}, strings_can_be_null=False)
        return pacsv.read_csv(path, convert_options=options)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as error:
        kind = "Parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "CSV"
        raise DataValidationError(f"not a readable {kind} file ({error})", file=str(path), field="file") from error


def _match(names: list[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    folded = [name for name in names if name.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def _ids(path: Path, column, name: str) -> list[str | None]:
    import pyarrow as pa

    if pa.types.is_integer(column.type):
        return [None if value is None else str(value) for value in column.to_pylist()]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [None if value is None else value.strip() for value in column.to_pylist()]
    raise DataValidationError(f"id column type is {column.type}, expected text or integers", file=str(path),
                              field=name)

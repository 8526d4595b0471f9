"""Survey-file ingest: SDSS spectra, FITS cut-outs and photometry catalogues into a dataset.

`ingest(IngestConfig(out=..., spectra=[...], images=[...], catalog=...))` checks every input, joins
the modalities by object id and writes a dataset folder atomically; see `pipeline` for the rules and
`sdss`, `images`, `catalog` for what each kind of file must hold.
"""

from astrofm.data.ingest.pipeline import REJECTS_NAME, IngestConfig, IngestResult, Reject, ingest

__all__ = ["REJECTS_NAME", "IngestConfig", "IngestResult", "Reject", "ingest"]

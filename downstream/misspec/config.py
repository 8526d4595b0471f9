"""The misspecification study's settings, and the NAME=DIR parsing of the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from downstream.misspec.classifiers import KINDS
from downstream.misspec.embed import CONCAT

# The model was pretrained on the observed train split: only objects it never saw stand for "observed".
OBSERVED_SPLITS = ("val", "test")
SIMULATED_SPLITS = ("train", "val", "test")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class MisspecConfig:
    model: str  # exported model folder, pretrained on the observed dataset's train split
    observed: str  # the observed dataset folder
    simulated: dict[str, str]  # suite name -> simulated dataset folder
    out: str  # report folder to write
    modality: str = CONCAT  # a model modality, or "concat": every modality joined (objects having all)
    seed: int = 0  # halves, subsampling, classifier initialisation, permutations, bootstrap
    overwrite: bool = False
    classifier: str = "logistic"  # two-sample and model-comparison classifier: logistic | mlp
    n_permutations: int = 1000  # of the held-out labels, for the two-sample p-values
    n_bootstrap: int = 1000  # resamples of the held-out objects, for the AUC intervals
    k: int = 10  # neighbour rank of the kNN coverage distances
    coverage_level: float = 0.95  # a suite's own held-out objects are covered at this rate by construction
    flagged_fraction: float = 0.2  # the most confidently "simulated" share of a suite's held-out objects
    max_objects: int | None = None  # per dataset, after embedding (seeded subsample); None: all
    batch_size: int = 256  # embedding batch size
    progress: bool = True

    def __post_init__(self):
        if not self.simulated:
            raise ValueError("misspec: give at least one simulated suite (--simulated NAME=DATA_DIR)")
        for name in self.simulated:
            if not _NAME.match(name):
                raise ValueError(f"--simulated {name!r}: a suite name may use letters, digits and _ . + - only")
        if "observed" in self.simulated:
            raise ValueError("--simulated: 'observed' is reserved for the observed dataset; rename the suite")
        if self.classifier not in KINDS:
            raise ValueError(f"--classifier {self.classifier!r}: choose from {list(KINDS)}")
        if not 0 < self.coverage_level < 1:
            raise ValueError(f"--coverage-level {self.coverage_level}: must be in (0, 1)")
        if not 0 < self.flagged_fraction < 1:
            raise ValueError(f"--flagged-fraction {self.flagged_fraction}: must be in (0, 1)")
        for name in ("n_permutations", "n_bootstrap", "k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.max_objects is not None and self.max_objects < 20:
            raise ValueError(f"--max-objects {self.max_objects}: must be at least 20")


def parse_named(values: list[str], option: str = "--simulated") -> dict[str, str]:
    """['A=dir1', 'B=dir2'] -> {'A': 'dir1', 'B': 'dir2'}; errors name the offending argument."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f"{option} {value!r}: expected NAME=DATA_DIR")
        if not _NAME.match(name):
            raise ValueError(f"{option} {value!r}: the name {name!r} may use letters, digits and _ . + - only")
        if name in out:
            raise ValueError(f"{option} {value!r}: suite {name!r} given twice")
        out[name] = path
    return out

"""Lightning warnings that do not apply to astrofm's pretraining, silenced for every entry point (the CLI
and `pl.Trainer` + `ShardDataModule` from Python alike): `import pretrain` installs the filters.

- "Your `IterableDataset` has `__len__` defined": Lightning cautions that with several loader workers an
  IterableDataset's length may be wrong. The shard stream gives each worker an exact share of a sized epoch
  (ShardStream.batches_per_worker), so it is right.
- "LeafSpec ... is deprecated": torch's deprecation, raised inside Lightning's own code, not astrofm's.
"""

from __future__ import annotations

import warnings

MESSAGES = ("Your `IterableDataset` has `__len__` defined", ".*LeafSpec.* is deprecated")


def silence() -> None:
    for message in MESSAGES:
        warnings.filterwarnings("ignore", message=message)

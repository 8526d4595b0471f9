"""Settings of the HTTP service: what it serves, where it listens, and its limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

API_KEY_ENV = "ASTROFM_API_KEY"

# Hard ceilings written into the OpenAPI schemas; a ServeConfig may only tighten them.
HARD_MAX_K = 1000
HARD_MAX_OBJECTS = 1024
HARD_MAX_BODY_BYTES = 256 * 1024 * 1024


def _api_key_from_env() -> str | None:
    # Only from the environment: a key on the command line would show in `ps` and shell history.
    return os.environ.get(API_KEY_ENV) or None


@dataclass
class BatcherConfig:
    max_batch: int = 64  # objects per forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 256  # requests waiting for the model; one more gets 503

    def __post_init__(self):
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_ms < 0:
            raise ValueError(f"batcher: max_batch and max_queue must be >= 1 and max_wait_ms >= 0, got {self}")


@dataclass
class ServeConfig:
    model: str  # model folder (astrofm.load_model: config.json + model.safetensors)
    index: str  # index folder (astrofm index build)
    embeddings: str | None = None  # embedding folder: cross-modal id queries and labels of unindexed objects
    host: str = "127.0.0.1"  # loopback by default: exposing the service is a deliberate choice
    port: int = 8000
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    max_k: int = 100  # neighbours per search
    max_objects_per_request: int = 64  # objects per embed request
    max_body_bytes: int = 8 * 1024 * 1024  # request body; larger gets 413 before it is parsed
    verify_index: bool = True  # check the index checksums on load
    allow_other_model: bool = False  # serve an index or store embedded by another model than `model`
    torch_threads: int | None = None  # torch intra-op threads for the forward pass; None: torch's default
    log_level: str = "info"
    api_key: str | None = field(default_factory=_api_key_from_env, repr=False)

    def __post_init__(self):
        if not 1 <= self.max_k <= HARD_MAX_K:
            raise ValueError(f"max_k must be in 1..{HARD_MAX_K}, got {self.max_k}")
        if not 1 <= self.max_objects_per_request <= HARD_MAX_OBJECTS:
            raise ValueError(f"max_objects_per_request must be in 1..{HARD_MAX_OBJECTS}, "
                             f"got {self.max_objects_per_request}")
        if not 1024 <= self.max_body_bytes <= HARD_MAX_BODY_BYTES:
            raise ValueError(f"max_body_bytes must be in 1024..{HARD_MAX_BODY_BYTES}, got {self.max_body_bytes}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {self.torch_threads}")

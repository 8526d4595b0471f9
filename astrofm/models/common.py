"""What the encoders share: config presets, statistics checks, and a small pre-LN transformer.

The transformer is nanoGPT's block (pre-LayerNorm, fused qkv, GELU MLP) with a key mask, so that
missing pixels, patches or bands take no part in attention. Every sequence keeps at least one token
(the CLS token) unmasked, so a fully masked object still gives finite outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Config dataclasses: presets by name, and a JSON round trip that refuses unknown fields.
# ---------------------------------------------------------------------------------------------


class EncoderConfigMixin:
    """Mixed into each encoder's config dataclass; `PRESETS` maps a size name to field overrides."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ()  # fields set from the dataset spec by `for_spec`

    @classmethod
    def spec_values(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """The SPEC_FIELDS' values for a modality's spec in a manifest (the dataset decides them, not the recipe)."""
        return {}

    @classmethod
    def for_spec(cls, spec: dict[str, Any], preset: str = "tiny", **overrides: Any):
        """The preset with SPEC_FIELDS taken from the manifest's spec of this modality."""
        return cls.preset(preset, **{**cls.spec_values(spec), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """The config of size `name` ("tiny", "small", "base"), with any field overridden."""
        if name not in cls.PRESETS:
            raise ValueError(f"{cls.__name__}: unknown preset {name!r}; choose from {sorted(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# ---------------------------------------------------------------------------------------------
# Statistics from the manifest: read, check, turn into tensors.
# ---------------------------------------------------------------------------------------------


def read_statistic(statistics: dict[str, Any], key: str, modality: str, n: int | None,
                   positive: bool = False) -> torch.Tensor:
    """statistics[key] as float32: a scalar tensor when n is None, else (n,) from a list of n floats."""
    if key not in statistics:
        count = statistics.get("count")
        hint = " (count is 0: no train object has this modality)" if count == 0 else ""
        raise ValueError(f"{modality} statistics lack {key!r}{hint}; found keys {sorted(statistics)}")
    value = statistics[key]
    if n is None:
        if isinstance(value, (list, tuple)) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{modality} statistics {key!r} must be one number, got {value!r}")
        values = [float(value)]
    else:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{modality} statistics {key!r} must be a list of {n} numbers (one per band), "
                             f"got {value!r}")
        if len(value) != n:
            raise ValueError(f"{modality} statistics {key!r} has {len(value)} values but the encoder "
                             f"expects {n} bands")
        values = [float(v) for v in value]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{modality} statistics {key!r} has non-finite values: {value!r}")
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"{modality} statistics {key!r} must be positive, got {value!r}")
    tensor = torch.tensor(values, dtype=torch.float32)
    return tensor[0] if n is None else tensor


def noise_or_scale(noise: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The median noise where it is positive, else the flux scale (a channel with no valid pixel)."""
    return torch.where(noise > 0, noise, scale)


# ---------------------------------------------------------------------------------------------
# A pre-LN transformer with a key mask.
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        require(dim % n_heads == 0, f"width {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x (B, T, D); keep (B, T) bool, True where a token may be attended to
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x (B, T, D)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],  # (B, 1, 1, T)
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), keep)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """`n_layers` pre-LN blocks and a final LayerNorm: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, n_heads, mlp_ratio, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, keep)
        return self.ln_f(x)


def init_weights(module: nn.Module) -> None:
    """GPT-2 style initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of "Attention is all you need": (n, dim)."""
    position = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


def masked_mean(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept tokens: (B, T, D), (B, T) -> (B, D)."""
    weights = keep.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)

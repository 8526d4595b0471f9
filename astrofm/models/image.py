"""Image encoders: a ViT (transformers' ViTModel, trained from scratch) and a small CNN for CPUs.

Both normalise the same way, per band b with the manifest statistics (median m_b, robust scale s_b):
    x = asinh((flux - m_b) / s_b)       linear in the sky noise, logarithmic in bright galaxy cores
zeroed where ivar is 0 (or not finite), so those pixels are never read; optionally a validity channel
per band (1 = measured, 0 = masked) is stacked on, so the net can tell a masked pixel from sky.

    ImageViTEncoder   (B, C, H, W) -> patches of p x p -> ViT -> CLS token (or mean)  -> (B, dim)
    ImageCNNEncoder   (B, C, H, W) -> conv + GroupNorm + GELU stages -> global mean  -> (B, channels[-1])
    either, optionally [+ aperture photometry about the centre -> MLP              -> (B, aperture_dim)]

The optional aperture branch (both encoders; `aperture_radii`) sums the linear fluxes (before asinh) in circular apertures about the
stamp centre, band by band: a mean-pooled net over asinh pixels cannot add fluxes up, and colours are
ratios of summed fluxes. Each aperture flux is divided by its sky noise (flux_scale * sqrt(pixels)) and
squashed by asinh, like the pixels.

Nothing is downloaded: the ViT is built from a `transformers.ViTConfig`, with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from astrofm.models.common import EncoderConfigMixin, read_statistic, require


def _check_apertures(config) -> None:
    require(all(0 < r <= config.image_size / 2 for r in config.aperture_radii),
            f"aperture_radii {list(config.aperture_radii)} must lie in (0, image_size / 2 = {config.image_size / 2}]")
    require(config.aperture_dim >= 1, f"aperture_dim must be positive, got {config.aperture_dim}")


class _ImageNormalisation(nn.Module):
    """Per-band statistics buffers, their checks, the normalised input both encoders read, and the shared
    forward: a subclass builds `features` (normalised pixels -> (B, D)) and calls `_build_apertures`."""

    modality = "image"

    def _register_identity(self, n_bands: int) -> None:
        self.register_buffer("flux_median", torch.zeros(n_bands))
        self.register_buffer("flux_scale", torch.ones(n_bands))

    def set_statistics(self, spec: dict[str, Any], statistics: dict[str, Any]) -> None:
        """Take the normalisation from the manifest's `modalities.image` and `statistics.image`."""
        config = self.config
        bands = list(spec.get("bands", []))
        if len(bands) != config.n_bands:
            raise ValueError(f"image has {len(bands)} bands {bands} but the encoder expects {config.n_bands}; "
                             f"build it with {type(config).__name__}(n_bands={len(bands)})")
        size = spec.get("size")
        if size != config.image_size:
            raise ValueError(f"image stamps are {size} px but the encoder expects {config.image_size} px; "
                             f"build it with {type(config).__name__}(image_size={size})")
        device = self.flux_median.device
        n = config.n_bands
        self.register_buffer("flux_median", read_statistic(statistics, "flux_median", "image", n).to(device))
        self.register_buffer("flux_scale", read_statistic(statistics, "flux_scale", "image", n,
                                                          positive=True).to(device))

    def _build_apertures(self, config) -> None:
        """The aperture branch where config.aperture_radii is set (it widens output_dim), else None."""
        self.apertures = None
        if config.aperture_radii:
            self.apertures = ApertureFluxes(config.n_bands, config.image_size, config.aperture_radii,
                                            config.aperture_dim)
            self.output_dim += config.aperture_dim

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's features of the normalised pixels, with the aperture fluxes beside them if built."""
        flux, valid = self._flux_and_validity(inputs)  # checked and masked once for both paths
        features = self.features(self._normalised(flux, valid))  # (B, D)
        if self.apertures is None:
            return features
        return torch.cat([features, self.apertures(self._linear(flux, valid), self.flux_scale)], dim=1)

    def linear_flux(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) flux minus the band median, zero where ivar is 0 or a value is not finite."""
        return self._linear(*self._flux_and_validity(inputs))

    def _linear(self, flux: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, flux - self.flux_median[:, None, None], flux.new_zeros(()))

    def _flux_and_validity(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        flux = inputs["flux"]  # (B, C, H, W)
        ivar = inputs.get("ivar")
        expected = (config.n_bands, config.image_size, config.image_size)
        if flux.ndim != 4 or tuple(flux.shape[1:]) != expected:
            raise ValueError(f"image flux {tuple(flux.shape)}: expected (B, {', '.join(map(str, expected))})")
        if ivar is None:
            ivar = torch.ones_like(flux)  # stored without ivar: unit weight, as in collate
        elif ivar.shape != flux.shape:
            raise ValueError(f"image ivar {tuple(ivar.shape)} does not match flux {tuple(flux.shape)}")
        return flux, (ivar > 0) & torch.isfinite(ivar) & torch.isfinite(flux)

    def normalise(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """{"flux", "ivar"} (B, C, H, W) -> (B, C or 2C, H, W) normalised pixels (+ validity)."""
        return self._normalised(*self._flux_and_validity(inputs))

    def _normalised(self, flux: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        median, scale = self.flux_median[:, None, None], self.flux_scale[:, None, None]  # (C, 1, 1)
        x = torch.where(valid, torch.asinh((flux - median) / scale), flux.new_zeros(()))  # (B, C, H, W)
        if self.config.validity_channel:
            x = torch.cat([x, valid.to(x.dtype)], dim=1)  # (B, 2C, H, W)
        return x


# ---------------------------------------------------------------------------------------------
# ViT
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageViTEncoderConfig(EncoderConfigMixin):
    n_bands: int = 3  # bands C; must equal the dataset's (default g, r, z)
    image_size: int = 32  # stamp side H = W in pixels; must equal the dataset's
    patch_size: int = 4  # ViT patch side; image_size must be divisible by it (32 / 4 = 64 patches)
    dim: int = 64  # token width = output_dim (ViTConfig.hidden_size)
    n_layers: int = 2  # transformer blocks (num_hidden_layers)
    n_heads: int = 4  # attention heads (num_attention_heads); dim must be divisible by it
    mlp_ratio: float = 2.0  # intermediate_size / dim
    dropout: float = 0.0  # hidden and attention dropout
    pool: str = "cls"  # "cls": the CLS token; "mean": mean over patch tokens
    validity_channel: bool = True  # stack a 0/1 validity channel per band (num_channels = 2C)
    aperture_radii: tuple[float, ...] = ()  # pixels about the centre; () = no aperture branch
    aperture_dim: int = 64  # width of the aperture branch's output (added to dim)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"dim": 64, "n_layers": 2, "n_heads": 4, "mlp_ratio": 2.0},
        "small": {"dim": 256, "n_layers": 6, "n_heads": 8, "mlp_ratio": 4.0},
        "base": {"dim": 768, "n_layers": 12, "n_heads": 12, "mlp_ratio": 4.0},  # ViT-B
    }
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ("n_bands", "image_size")

    def __post_init__(self):
        self.aperture_radii = tuple(float(r) for r in self.aperture_radii)
        require(self.n_bands >= 1, f"n_bands must be positive, got {self.n_bands}")
        _check_apertures(self)
        require(self.image_size % self.patch_size == 0,
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        require(self.dim % self.n_heads == 0, f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        require(self.pool in ("cls", "mean"), f"pool must be 'cls' or 'mean', got {self.pool!r}")

    @classmethod
    def spec_values(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return {"n_bands": len(spec["bands"]), "image_size": int(spec["size"])}


class ImageViTEncoder(_ImageNormalisation):
    config_class = ImageViTEncoderConfig

    def __init__(self, config: ImageViTEncoderConfig | None = None):
        super().__init__()
        from transformers import ViTConfig, ViTModel  # deferred: importing ViTModel takes about 1.6 s

        self.config = config = config or ImageViTEncoderConfig()
        self.output_dim = config.dim
        vit_config = ViTConfig(
            hidden_size=config.dim,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            intermediate_size=int(round(config.dim * config.mlp_ratio)),
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            image_size=config.image_size,
            patch_size=config.patch_size,
            num_channels=config.n_bands * (2 if config.validity_channel else 1),
            layer_norm_eps=1e-6,
        )
        self.vit = ViTModel(vit_config, add_pooling_layer=False)  # random init, nothing downloaded
        self._build_apertures(config)
        self._register_identity(config.n_bands)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C', H, W) normalised pixels -> (B, dim)."""
        hidden = self.vit(pixel_values=pixels).last_hidden_state  # (B, 1 + (H/p)(W/p), D)
        if self.config.pool == "cls":
            return hidden[:, 0]  # (B, D)
        return hidden[:, 1:].mean(1)  # (B, D)


# ---------------------------------------------------------------------------------------------
# CNN
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageCNNEncoderConfig(EncoderConfigMixin):
    n_bands: int = 3  # bands C; must equal the dataset's (default g, r, z)
    image_size: int = 32  # stamp side in pixels; must equal the dataset's (the net itself takes any size)
    channels: tuple[int, ...] = (32, 64, 128)  # width of each stage; every stage after the first halves H, W
    convs_per_stage: int = 1  # conv + GroupNorm + GELU layers per stage
    groups: int = 8  # GroupNorm groups; must divide every width
    validity_channel: bool = True  # stack a 0/1 validity channel per band (input channels = 2C)
    aperture_radii: tuple[float, ...] = ()  # pixels about the centre; () = no aperture branch
    aperture_dim: int = 64  # width of the aperture branch's output (added to channels[-1])

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"channels": (32, 64, 128), "convs_per_stage": 1},
        "small": {"channels": (64, 128, 256), "convs_per_stage": 2},
        "base": {"channels": (96, 192, 384, 768), "convs_per_stage": 2},
    }
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ("n_bands", "image_size")

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.aperture_radii = tuple(float(r) for r in self.aperture_radii)
        require(self.n_bands >= 1, f"n_bands must be positive, got {self.n_bands}")
        _check_apertures(self)
        require(len(self.channels) >= 1 and self.convs_per_stage >= 1, "need at least one stage and one conv")
        require(all(c % self.groups == 0 for c in self.channels),
                f"GroupNorm groups {self.groups} must divide every stage width {self.channels}")

    @classmethod
    def spec_values(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return {"n_bands": len(spec["bands"]), "image_size": int(spec["size"])}


class ApertureFluxes(nn.Module):
    """(B, C, H, W) flux minus the band median, zero where masked -> (B, aperture_dim): asinh of each band's
    flux within each radius over its sky noise, then LayerNorm, Linear and GELU."""

    def __init__(self, n_bands: int, image_size: int, radii: tuple[float, ...], out_dim: int):
        super().__init__()
        centre = (image_size - 1) / 2.0
        rows, cols = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
        distance = torch.hypot(rows - centre, cols - centre)  # (H, W) pixels from the centre
        self.register_buffer("masks", torch.stack([(distance < r).float() for r in radii]), persistent=False)
        features = n_bands * len(radii)
        self.mlp = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, out_dim), nn.GELU())

    def sums(self, flux: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, R): each band's flux summed within each radius (cumulative)."""
        return torch.einsum("bchw,rhw->bcr", flux, self.masks)

    def forward(self, flux: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        noise = scale[:, None] * self.masks.sum(dim=(1, 2)).sqrt()  # (C, R): sky sigma of each aperture
        return self.mlp(torch.asinh(self.sums(flux) / noise).flatten(1))  # (B, out_dim)


def _conv_norm_act(c_in: int, c_out: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(groups, c_out), nn.GELU())


class ImageCNNEncoder(_ImageNormalisation):
    config_class = ImageCNNEncoderConfig

    def __init__(self, config: ImageCNNEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or ImageCNNEncoderConfig()
        self.output_dim = config.channels[-1]
        layers: list[nn.Module] = []
        c_in = config.n_bands * (2 if config.validity_channel else 1)
        for stage, width in enumerate(config.channels):
            for i in range(config.convs_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(_conv_norm_act(c_in, width, stride, config.groups))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(config.channels[-1])
        self._build_apertures(config)
        self._register_identity(config.n_bands)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C', H, W) normalised pixels -> (B, channels[-1])."""
        features = self.stages(pixels)  # (B, channels[-1], H / 2^(stages-1), W / 2^(stages-1))
        return self.norm(features.mean(dim=(2, 3)))

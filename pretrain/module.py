"""The LightningModule for contrastive multi-modal pretraining.

Encoders are injected (in a recipe: `class_path` / `init_args` per modality), so one module trains a
tiny CNN on a laptop and a ViT on a GPU cluster. The model itself is a plain `MultiModalModel`; this
module only adds the training loop around it: augmentations, the loss, validation retrieval metrics,
the optimiser and its schedule.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Timer

from astrofm import __version__
from astrofm.augment import AugmentConfig, augment_batch, check_images_carry_ivar
from astrofm.data.manifest import MANIFEST_NAME
from astrofm.losses import ContrastiveLossConfig, MultiModalContrastiveLoss
from astrofm.models.multimodal import MultiModalModel
from astrofm.retrieval import leave_one_out_knn_r2, pairwise_retrieval
from pretrain.export import CHECKPOINT_KEY
from pretrain.masked_spectrum import MaskedSpectrumConfig, MaskedSpectrumHead, span_mask
from pretrain.optim import OptimizerConfig, build_optimizer
from pretrain.shift_equivariance import (
    ShiftEquivarianceConfig,
    ShiftEquivarianceHead,
    draw_shifts,
    moved_copy,
)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stops with the last good checkpoint intact."""


class ContrastivePretrainer(pl.LightningModule):
    def __init__(
        self,
        encoders: dict[str, torch.nn.Module],
        embed_dim: int = 128,
        head_hidden_dim: int | None = None,
        logit_scale_init: float = math.log(1 / 0.07),
        loss: ContrastiveLossConfig | None = None,
        augment: AugmentConfig | None = None,
        use_augmentations: bool = True,
        optimizer: OptimizerConfig | None = None,
        retrieval_ks: tuple[int, ...] = (1, 10),
        self_views: tuple[str, ...] = (),
        self_view_weight: float = 1.0,
        masked_spectrum: MaskedSpectrumConfig | None = None,
        shift_equivariance: ShiftEquivarianceConfig | None = None,
        val_probe_label: str | None = "redshift",
        val_probe_k: int = 16,
    ):
        """
        Args:
            encoders: modality -> encoder module (spectrum, photometry, image; any subset of two or more).
            embed_dim: dimension of the shared, L2-normalised embedding space.
            head_hidden_dim: hidden width of the projection heads (None: linear heads).
            logit_scale_init: initial log of the contrastive logit scale (CLIP: log(1/0.07)).
            loss: contrastive loss options (distributed gather, local loss, scale clamp).
            augment: which physics augmentations to apply to training batches.
            use_augmentations: switch all augmentations off at once.
            optimizer: AdamW, warm-up and cosine settings.
            retrieval_ks: k values of the validation top-k cross-modal retrieval accuracy.
            self_views: modalities that are also matched against a second augmented view of themselves
                (e.g. ["spectrum"]: a new noise draw). The cross-modal loss keeps only what the modalities
                share; this term keeps what identifies the object within its own modality, such as the
                exact redshift in a spectrum's lines.
            self_view_weight: weight of each self-view InfoNCE term beside the cross-modal loss.
            masked_spectrum: masked-spectrum modelling beside the contrastive loss (weight 0: off), as
                AstroCLIP pretrains SpecFormer; see pretrain.masked_spectrum. Its `self_view: true` makes
                the masked spectrum the spectrum's self view when both terms are on (one pass for both).
            shift_equivariance: moving a spectrum in wavelength by e^delta must move its embedding by a
                fixed amount per unit delta along one learned direction (weight 0: off), so the embedding
                holds ln(1 + z) as a straight coordinate; see pretrain.shift_equivariance.
            val_probe_label: a numeric label of the dataset (None: none) predicted in validation from each
                modality's embeddings by leave-one-out kNN among the retrieval pool, logged as
                val/knn_r2/<modality>: the science the embeddings are for, epoch by epoch. Skipped
                where the val objects lack the label. A trend: with a pool of 1,000 neighbours it reads
                well below `astrofm regress` on the whole train split (0.89 against 0.985 for redshift).
            val_probe_k: neighbours of that kNN.
        """
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"contrastive pretraining needs at least two modalities, got {sorted(encoders)}")
        self.save_hyperparameters(ignore=["encoders"])
        self.model = MultiModalModel(dict(encoders), embed_dim=embed_dim, logit_scale_init=logit_scale_init,
                                     head_hidden_dim=head_hidden_dim)
        self.loss_fn = MultiModalContrastiveLoss(loss or ContrastiveLossConfig())
        self.augment_config = augment or AugmentConfig()
        self.use_augmentations = use_augmentations
        self.optimizer_config = optimizer or OptimizerConfig()
        self.retrieval_ks = tuple(retrieval_ks)
        self.self_views = tuple(self_views)
        self.self_view_weight = float(self_view_weight)
        self.val_probe_label, self.val_probe_k = val_probe_label, int(val_probe_k)
        self._check_self_views()
        self.masked_spectrum_config = masked_spectrum or MaskedSpectrumConfig()
        self.masked_spectrum_head = None  # training only: export keeps `model.*`, not this head
        if self.masked_spectrum_config.enabled:
            if "spectrum" not in self.model.encoders:
                raise ValueError(f"masked_spectrum.weight > 0 needs a spectrum encoder (the model has "
                                 f"{self.model.modalities})")
            self.masked_spectrum_head = MaskedSpectrumHead(self.model.encoders["spectrum"], self.masked_spectrum_config)
        self.shift_equivariance_config = shift_equivariance or ShiftEquivarianceConfig()
        self.shift_equivariance_head = None  # training only, as the masked-spectrum head
        if self.shift_equivariance_config.enabled:
            if "spectrum" not in self.model.encoders:
                raise ValueError(f"shift_equivariance.weight > 0 needs a spectrum encoder (the model has "
                                 f"{self.model.modalities})")
            self.shift_equivariance_head = ShiftEquivarianceHead(embed_dim, self.shift_equivariance_config)
        self.data_info: dict[str, Any] = {}
        self._time_fraction = 0.0  # share of Trainer max_time used, rank 0's clock (anneal_by_time)
        self._val_embeddings: dict[str, list[torch.Tensor]] = {}
        self._val_masks: dict[str, list[torch.Tensor]] = {}
        self._val_labels: list[torch.Tensor] = []

    # Data-dependent set-up ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        manifest = getattr(datamodule, "manifest", None)
        if manifest is None:
            return
        missing = set(self.model.modalities) - set(manifest.spec.modalities)
        if missing:
            raise ValueError(f"{datamodule.path}: the model has encoders for {sorted(missing)}, "
                             f"which the dataset lacks (it has {manifest.spec.modalities})")
        if self.augment_config.image_noise and "image" in self.model.modalities:
            check_images_carry_ivar(manifest, f"{datamodule.path}/{MANIFEST_NAME}")
        self.model.set_statistics(manifest.to_dict())
        self.data_info = {"name": manifest.name, "path": str(datamodule.path), "train_objects":
                          manifest.count("train"), "provenance": manifest.provenance}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"model_config": self.model.to_config(), "data": self.data_info,
                                      "recipe": getattr(self, "recipe", None), "astrofm_version": __version__}

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    # Training ------------------------------------------------------------------------------------
    def _masks(self, batch: dict, modalities) -> dict[str, torch.Tensor]:
        return {m: batch["mask"][m] for m in modalities}

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        source = batch
        if self.use_augmentations:
            batch = augment_batch(source, self.augment_config)
        embeddings = self.model(batch)
        loss, parts = self.loss_fn(embeddings, self._masks(batch, embeddings), self.model.logit_scale)
        for modality in self.self_views:
            if modality in embeddings and not self._masked_view_is_self_view(modality):
                view_loss, view_parts = self._self_view_loss(source, modality, embeddings[modality])
                loss = loss + self.self_view_weight * view_loss
                parts.update(view_parts)
        if self.masked_spectrum_head is not None and batch.get("spectrum") is not None:
            if self._masked_view_is_self_view("spectrum") and "spectrum" in embeddings:
                masked_loss, view_loss, view_parts = self._masked_self_view_loss(source, embeddings["spectrum"])
                loss = loss + self.self_view_weight * view_loss
                parts.update(view_parts)
            else:
                masked_loss = self._masked_spectrum_loss(batch)
            parts["masked_spectrum"] = masked_loss
            loss = loss + self.masked_spectrum_config.weight * masked_loss
        if self.shift_equivariance_head is not None and batch.get("spectrum") is not None:
            shift_loss = self._shift_equivariance_loss(source)
            parts["shift_equivariance"] = shift_loss
            loss = loss + self.shift_equivariance_config.weight * shift_loss
        self._stop_on_non_finite(loss, parts)
        size = len(batch["id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for pair, value in parts.items():
            self.log(f"train/loss/{pair}", value, batch_size=size)
        self.log("logit_scale", self.model.logit_scale.detach().exp(), prog_bar=True, batch_size=size)
        return loss

    def _check_self_views(self) -> None:
        unknown = set(self.self_views) - set(self.model.modalities)
        if unknown:
            raise ValueError(f"self_views {sorted(unknown)}: no such encoder (the model has {self.model.modalities})")
        switched = {"spectrum": self.augment_config.spectrum_noise, "photometry": self.augment_config.photometry_noise,
                    "image": (self.augment_config.image_rot90 or self.augment_config.image_flip
                              or self.augment_config.image_noise)}
        identical = [m for m in self.self_views if not (self.use_augmentations and switched.get(m, False))]
        if identical:
            raise ValueError(f"self_views {identical}: the second view would equal the first; switch on that "
                             f"modality's augmentation (augment.spectrum_noise, ...)")

    def _self_view_loss(self, source: dict, modality: str, first: torch.Tensor):
        """InfoNCE between `first` (the embedding of one augmented view) and a second, independent view."""
        view = augment_batch({"mask": source["mask"], modality: source[modality]}, self.augment_config)
        return self._view_pair_loss(modality, first, self.model(view)[modality], source["mask"][modality])

    def _view_pair_loss(self, modality: str, first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor):
        """(loss, parts): InfoNCE between two views' embeddings of the same objects (one presence mask)."""
        return self.loss_fn({modality: first, f"{modality}_view": second},
                            {modality: mask, f"{modality}_view": mask}, self.model.logit_scale)

    def _masked_view_is_self_view(self, modality: str) -> bool:
        """masked_spectrum.self_view with both terms on: one masked pass serves the masked term and the
        spectrum self view."""
        return (modality == "spectrum" and modality in self.self_views and self.masked_spectrum_head is not None
                and self.masked_spectrum_config.self_view)

    def _masked_self_view_loss(self, source: dict, first: torch.Tensor):
        """(masked-spectrum loss, self-view loss, its parts): the second view is a new noise draw of the
        spectrum with spans hidden; its pooled output is matched against `first`, its patches decoded."""
        mask = source["mask"]["spectrum"]
        view = augment_batch({"mask": source["mask"], "spectrum": source["spectrum"]}, self.augment_config)
        masked_loss, pooled = self.masked_spectrum_head(self.model.encoders["spectrum"], view["spectrum"], mask,
                                                        return_pooled=True)
        view_loss, view_parts = self._view_pair_loss("spectrum", first, self.model.heads["spectrum"](pooled), mask)
        return masked_loss, view_loss, view_parts

    def _shift_equivariance_loss(self, source: dict) -> torch.Tensor:
        """Two moved copies of each spectrum in one encoder pass (new noise draws), scored by the head."""
        spectrum, rows = source["spectrum"], source["mask"]["spectrum"].to(torch.bool)
        config = self.shift_equivariance_config
        if config.max_objects is not None:  # the first max_objects objects with a spectrum
            chosen = rows.nonzero().squeeze(1)[:config.max_objects]
            if chosen.numel() == 0:  # no spectrum in the batch: one unscored row keeps the graph
                chosen = torch.zeros(1, dtype=torch.long, device=rows.device)
            spectrum, rows = {k: spectrum[k][chosen] for k in ("flux", "ivar")}, rows[chosen]
        batch = spectrum["flux"].shape[0]
        wave_min, wave_step = self._spectrum_grid()
        shifts = draw_shifts(2 * batch, config.max_shift)
        copies = moved_copy({k: spectrum[k].repeat(2, 1) for k in ("flux", "ivar")}, shifts, wave_min, wave_step,
                            config.max_shift)
        both = {"mask": {"spectrum": rows.repeat(2)}, "spectrum": copies}
        if self.use_augmentations:
            both = augment_batch(both, self.augment_config)
        embedded = self.model.heads["spectrum"](self.model.encoders["spectrum"](both["spectrum"]))  # (2B, D)
        return self.shift_equivariance_head(embedded[:batch], embedded[batch:], shifts[:batch], shifts[batch:], rows)

    def _spectrum_grid(self) -> tuple[float, float]:
        """(wave_min, wave_step) of the dataset's spectra, from the manifest the model was normalised with."""
        spec = self.model.spec.get("spectrum", {})
        if "wave_min" not in spec or "wave_step" not in spec:
            raise ValueError("shift_equivariance needs the spectrum's wavelength grid (wave_min, wave_step) from "
                             "the dataset manifest; the model has none: call model.set_statistics(manifest) first")
        return float(spec["wave_min"]), float(spec["wave_step"])

    def _masked_spectrum_loss(self, batch: dict, seed: int | None = None) -> torch.Tensor:
        """seed: draw the hidden spans from it (validation: the same spans every epoch); None: fresh ones."""
        hidden = None
        if seed is not None:
            flux = batch["spectrum"]["flux"]
            hidden = span_mask(*flux.shape, self.masked_spectrum_config,
                               generator=torch.Generator().manual_seed(seed)).to(flux.device)
        return self.masked_spectrum_head(self.model.encoders["spectrum"], batch["spectrum"],
                                         batch["mask"]["spectrum"], hidden)

    def _stop_on_non_finite(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        finite = bool(torch.isfinite(loss.detach()).item())
        # Every rank decides together, so no rank is left waiting in an all-reduce.
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        detail = ", ".join(f"{pair}={float(value.detach()):.4g}" for pair, value in parts.items())
        checkpoint = next((c for c in self.trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")), None)
        last = checkpoint.last_model_path if checkpoint else "none saved yet"
        raise NonFiniteLossError(
            f"non-finite loss ({float(loss.detach()):.4g}) at epoch {self.current_epoch}, step {self.global_step}"
            f"{'; pairs: ' + detail if detail else ''}. Stopping; the last good checkpoint is {last}. "
            f"Lower the learning rate or check the data (astrofm data info --verify).")

    def configure_optimizers(self) -> dict:
        total = int(self.trainer.estimated_stepping_batches)
        by_time = self.optimizer_config.anneal_by_time and self._timer() is not None
        # The model and any training-only head.
        return build_optimizer(self, self.optimizer_config, total, (lambda: self._time_fraction) if by_time else None)

    def _timer(self) -> Timer | None:
        """Lightning's Timer callback when the Trainer has a max_time, else None."""
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        return timer if timer is not None and timer.time_remaining() is not None else None

    def on_train_batch_start(self, batch: Any, batch_index: int) -> None:
        timer = self._timer() if self.optimizer_config.anneal_by_time else None
        if timer is None:
            return
        elapsed, remaining = timer.time_elapsed(), timer.time_remaining()
        local = min(1.0, elapsed / max(elapsed + remaining, 1e-9))
        # Every rank must step with the same learning rate, so all take rank 0's clock.
        self._time_fraction = float(self.trainer.strategy.broadcast(local, src=0))

    # Validation: loss, and cross-modal retrieval among a fixed pool ----------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_embeddings, self._val_masks, self._val_labels = {}, {}, []

    def validation_step(self, batch: dict, batch_index: int) -> None:
        embeddings = self.model(batch)
        masks = self._masks(batch, embeddings)
        # Every rank reads the whole val split: score it locally, without a gather across ranks.
        loss, _ = self.loss_fn(embeddings, masks, self.model.logit_scale, gather=False)
        self.log("val/loss", loss, batch_size=len(batch["id"]), sync_dist=False)
        if self.masked_spectrum_head is not None and batch.get("spectrum") is not None:
            self.log("val/loss/masked_spectrum", self._masked_spectrum_loss(batch, seed=batch_index),
                     batch_size=len(batch["id"]), sync_dist=False)
        for modality, values in embeddings.items():
            self._val_embeddings.setdefault(modality, []).append(values.detach().float().cpu())
            self._val_masks.setdefault(modality, []).append(masks[modality].cpu())
        label = batch.get("labels", {}).get(self.val_probe_label) if self.val_probe_label else None
        self._val_labels.append(label.float().cpu() if label is not None
                                else torch.full((len(batch["id"]),), float("nan")))

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        embeddings = {m: torch.cat(v) for m, v in self._val_embeddings.items()}
        masks = {m: torch.cat(v) for m, v in self._val_masks.items()}
        pool = getattr(getattr(self.trainer, "datamodule", None), "hparams", {}).get("val_max_objects", 1000)
        metrics = pairwise_retrieval(embeddings, masks, ks=self.retrieval_ks, max_objects=pool)
        for name, value in metrics.items():
            if not name.startswith("pool/"):
                self.log(f"val/{name}", value, sync_dist=False)
        for k in self.retrieval_ks:
            values = [v for name, v in metrics.items() if name.startswith(f"top{k}/")]
            if values:
                self.log(f"val/top{k}_mean", sum(values) / len(values), prog_bar=k == max(self.retrieval_ks),
                         sync_dist=False)
        self.log("val/logit_scale", self.model.logit_scale.detach().exp(), sync_dist=False)
        self._log_val_probe(embeddings, masks, pool)

    def _log_val_probe(self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], pool: int) -> None:
        labels = torch.cat(self._val_labels) if self._val_labels else torch.empty(0)
        for modality, values in embeddings.items():
            keep = masks[modality] & torch.isfinite(labels)
            if int(keep.sum()) < 3:
                continue
            r2 = leave_one_out_knn_r2(values[keep][:pool], labels[keep][:pool], k=self.val_probe_k)
            self.log(f"val/knn_r2/{modality}", r2, sync_dist=False)

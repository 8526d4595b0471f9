"""The multi-modal contrastive loss: a sum of symmetric InfoNCE losses over every pair of modalities.

For a pair (a, b) only the objects that have both modalities take part, as queries and as candidates:
a row of an object that lacks a or b is dropped from the logits, not just from the targets. The pair loss
is the mean over those n objects of (CE(a -> b) + CE(b -> a)) / 2 with logits `scale * e_a @ e_b.T`,
where `scale = exp(logit_scale)` clamped at `logit_scale_max` (CLIP). A pair with fewer than 2 valid
objects in the (global) batch contributes 0 and is left out of `parts`. The total is the sum over pairs.

The loss owns the distributed logic (as open_clip's loss.py does). With torch.distributed initialised
and more than one rank, every rank gathers the embeddings and masks of all ranks (local batches may
differ in size: they are padded to the largest and the padding is masked out), and the normalisation
of each pair is the global number of valid objects. The convention is:

* the value returned on every rank (`total` and `parts`) is the **global** loss of the whole batch
  across ranks, identical on every rank, ready to log;
* the gradient of `total` on each rank is that rank's share, scaled so that **the DDP average over
  ranks of the parameter gradients equals the gradient of the global loss** (as if one process had
  seen the concatenated batch). Concretely, with W ranks:
  - `local_loss=False`: each rank computes the full global loss L. With `gather_with_grad`, the
    gather's backward sums the gradients of all W copies of L, so a rank's embeddings receive
    W * dL/de; without it, only the local slice carries gradient and it is scaled by W. Either way
    DDP's mean over ranks is dL/dtheta; the logit scale gets dL/ds on every rank.
  - `local_loss=True`: rank r scores only its own valid rows against all gathered rows, giving L_r
    with sum_r L_r = L; it back-propagates W * L_r, so DDP's mean is dL/dtheta exactly when
    `gather_with_grad` is set. Without it the gradient misses the terms where this rank's rows are
    negatives of other ranks' queries (the usual open_clip approximation).
  The value of `total` is made global with one all-reduce of the per-pair losses (local_loss only):
  `total = W * L_r + (L - W * L_r).detach()`.

Every rank must pass the modalities that have any valid object anywhere; a rank whose local batch
lacks a modality entirely may leave it out of `embeddings` (its mask must then be all False or
missing) and a zero block with gradient is used in its place, so that the collectives and the
backward graph match on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# The modality order of the dataset format (astrofm.data.format.MODALITIES); other names sort after.
MODALITY_ORDER = ("spectrum", "photometry", "image")


@dataclass
class ContrastiveLossConfig:
    local_loss: bool = False  # each rank scores its own rows against all gathered rows (memory O(local x global))
    gather_with_grad: bool = True  # gradients flow back through the all-gather to the rank that owns each row
    logit_scale_max: float = 100.0  # clamp of exp(logit_scale), as CLIP


def ordered_modalities(names: Iterable[str]) -> list[str]:
    """Modality names in the fixed order spectrum, photometry, image, then any others sorted."""
    names = set(names)
    return [m for m in MODALITY_ORDER if m in names] + sorted(names - set(MODALITY_ORDER))


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


# ---------------------------------------------------------------------------------------------------
# Autograd helpers


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward sums every rank's gradient of each slice onto its owner."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.world = dist.get_world_size(group)
        tensor = tensor.contiguous()
        pieces = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(pieces, tensor, group=group)
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        rows = grad.shape[0] // ctx.world
        if grad.is_cuda and "nccl" in str(dist.get_backend(ctx.group)).lower():
            out = torch.empty((rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad, group=ctx.group)
            return out, None
        grad = grad.clone()  # gloo has no reduce-scatter: all-reduce, then keep this rank's slice
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * rows:(ctx.rank + 1) * rows], None


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `factor`."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


class _ClampMax(torch.autograd.Function):
    """min(x, max_value), whose gradient, once clamped, only passes where descent would lower x.

    A plain clamp has zero gradient above the bound, so a parameter that overshoots is stuck there;
    here a gradient that pushes it further up is dropped and one that pulls it back passes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_value: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.max_value = max_value
        return x.clamp(max=max_value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        blocked = (x > ctx.max_value) & (grad < 0)
        return torch.where(blocked, torch.zeros_like(grad), grad), None


def _world(group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group), dist.get_rank(group)
    return 1, 0


def _gather_plain(tensor: torch.Tensor, world: int, group) -> torch.Tensor:
    pieces = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(pieces, tensor.contiguous(), group=group)
    return torch.cat(pieces, dim=0)


# ---------------------------------------------------------------------------------------------------
# The loss


class MultiModalContrastiveLoss(nn.Module):
    """`total, parts = loss(embeddings, masks, logit_scale)`; see the module docstring for the maths.

    embeddings: modality -> (B, D) L2-normalised embeddings of the local batch.
    masks: modality -> (B,) bool, True where the object has the modality (missing key: all True when
        the modality has embeddings).
    logit_scale: scalar tensor, log of the scale; exp(logit_scale) clamped at `logit_scale_max`.
    Returns the scalar total (global loss value; gradient scaled for DDP) and the detached global
    per-pair losses keyed "a-b" in the order spectrum, photometry, image; pairs with fewer than 2
    valid objects are left out.
    """

    def __init__(self, config: ContrastiveLossConfig | None = None, group=None):
        super().__init__()
        self.config = config or ContrastiveLossConfig()
        self.group = group  # process group; None is the default (world) group

    def forward(self, embeddings: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                logit_scale: torch.Tensor, gather: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # gather=False scores this rank's batch alone, e.g. in evaluation where every rank reads the same data.
        world, rank = _world(self.group) if gather else (1, 0)
        names = ordered_modalities(set(embeddings) | set(masks))
        local_mask, template = self._local_masks(embeddings, masks, names)  # (B, M) bool
        global_mask, rows_per_rank = self._gather_masks(local_mask, world)  # (W * Bmax, M)

        # Which pairs count is decided from the global masks, so every rank builds the same graph.
        index = {m: i for i, m in enumerate(names)}
        candidates = list(combinations(names, 2))
        counts = torch.stack([(global_mask[:, index[a]] & global_mask[:, index[b]]).sum()
                              for a, b in candidates]).tolist() if candidates else []  # one host sync
        pairs = [(pair, int(n)) for pair, n in zip(candidates, counts, strict=True) if n >= 2]

        # Keeps every embedding and the scale in the graph (zero-weighted), so backward always works
        # and DDP sees all parameters used even when some modality is in no counted pair.
        anchor = sum(e[:0].sum() for e in embeddings.values()) + logit_scale.reshape(-1)[:0].sum()
        if not pairs:
            return anchor.float(), {}

        needed = ordered_modalities({m for pair, _ in pairs for m in pair})
        gathered = self._gather_embeddings(embeddings, needed, template, rows_per_rank, world)
        max_log = math.log(self.config.logit_scale_max)
        with torch.autocast(device_type=template.device.type, enabled=False):
            scale = _ClampMax.apply(logit_scale.float(), max_log).exp()
            lo = rank * rows_per_rank
            own = (lo, lo + rows_per_rank) if self.config.local_loss else None
            losses = torch.stack([
                self._pair_loss(gathered[a].float(), gathered[b].float(),
                                global_mask[:, index[a]] & global_mask[:, index[b]], n, scale, own)
                for (a, b), n in pairs])  # (P,) this rank's share; the global loss when not local_loss

            if self.config.local_loss and world > 1:
                global_losses = losses.detach().clone()
                dist.all_reduce(global_losses, group=self.group)  # sum over ranks of L_r = L
                share = world * losses.sum()
                total = share + (global_losses.sum() - share).detach()
            else:
                global_losses = losses.detach()
                total = losses.sum()
        parts = {pair_name(a, b): global_losses[i] for i, ((a, b), _) in enumerate(pairs)}
        return total + anchor, parts

    # -----------------------------------------------------------------------------------------------

    @staticmethod
    def _local_masks(embeddings, masks, names) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) bool masks of the local batch, checked against the embeddings; and one embedding."""
        if not embeddings:
            raise ValueError("the contrastive loss needs at least one modality's embeddings")
        template = next(iter(embeddings.values()))
        batch = template.shape[0]
        columns = []
        for m in names:
            emb, mask = embeddings.get(m), masks.get(m)
            if emb is not None and (emb.ndim != 2 or emb.shape[0] != batch):
                raise ValueError(f"embeddings[{m!r}] has shape {tuple(emb.shape)}; expected ({batch}, D)")
            if mask is None:
                mask = torch.ones(batch, dtype=torch.bool, device=template.device)
            mask = mask.to(device=template.device, dtype=torch.bool).reshape(-1)
            if mask.shape[0] != batch:
                raise ValueError(f"masks[{m!r}] has {mask.shape[0]} rows; the embeddings have {batch}")
            if emb is None:
                if bool(mask.any()):
                    raise ValueError(f"masks[{m!r}] marks objects present but embeddings[{m!r}] is missing")
                mask = torch.zeros_like(mask)
            columns.append(mask)
        return torch.stack(columns, dim=1), template

    def _gather_masks(self, local_mask: torch.Tensor, world: int) -> tuple[torch.Tensor, int]:
        """Global (W * Bmax, M) masks, every rank's rows padded to Bmax with False; and Bmax."""
        if world == 1:
            return local_mask, local_mask.shape[0]
        shape = torch.tensor(local_mask.shape, device=local_mask.device)
        shapes = _gather_plain(shape[None], world, self.group)  # (W, 2): rows, modalities
        if bool((shapes[:, 1] != shape[1]).any()):
            raise ValueError(f"ranks pass different modality sets (columns per rank {shapes[:, 1].tolist()}); "
                             f"every rank must use the same modality names")
        rows = int(shapes[:, 0].max())
        padded = F.pad(local_mask.to(torch.uint8), (0, 0, 0, rows - local_mask.shape[0]))
        return _gather_plain(padded, world, self.group).bool(), rows

    def _gather_embeddings(self, embeddings, needed, template, rows, world) -> dict[str, torch.Tensor]:
        """modality -> (W * Bmax, D) gathered embeddings, with this rank's slice carrying gradient."""
        blocks = []
        for m in needed:
            emb = embeddings.get(m)
            if emb is None:  # absent here but counted elsewhere: a zero block that still joins the graph
                dim = template.shape[1]
                emb = torch.zeros(template.shape[0], dim, dtype=template.dtype, device=template.device,
                                  requires_grad=torch.is_grad_enabled())
            blocks.append(emb.to(template.dtype))
        local = torch.cat(blocks, dim=1)  # (B, sum D): one collective for all modalities
        widths = [b.shape[1] for b in blocks]
        if world > 1:
            local = F.pad(local, (0, 0, 0, rows - local.shape[0]))
            if self.config.gather_with_grad:
                full = _GatherWithGrad.apply(local, self.group)
            else:
                if not self.config.local_loss:  # every rank computes all of L: restore DDP's mean
                    local = _ScaleGrad.apply(local, float(world))
                full = _gather_plain(local.detach(), world, self.group)
                rank = dist.get_rank(self.group)
                full = torch.cat([full[:rank * rows], local, full[(rank + 1) * rows:]], dim=0)
        else:
            full = local
        return dict(zip(needed, torch.split(full, widths, dim=1), strict=True))

    @staticmethod
    def _pair_loss(emb_a, emb_b, valid, n, scale, own) -> torch.Tensor:
        """Symmetric InfoNCE over the n valid rows, divided by 2n; only rows in `own` query if given."""
        keep = valid.nonzero().squeeze(1)  # (n,) global row of each candidate
        cand_a, cand_b = emb_a[keep], emb_b[keep]  # (n, D)
        if own is None:
            logits = scale * cand_a @ cand_b.T  # (n, n)
            labels = torch.arange(n, device=logits.device)
            summed = (F.cross_entropy(logits, labels, reduction="sum")
                      + F.cross_entropy(logits.T, labels, reduction="sum"))
        else:
            labels = ((keep >= own[0]) & (keep < own[1])).nonzero().squeeze(1)  # (q,) rank-offset labels
            logits_ab = scale * cand_a[labels] @ cand_b.T  # (q, n)
            logits_ba = scale * cand_b[labels] @ cand_a.T  # (q, n)
            summed = (F.cross_entropy(logits_ab, labels, reduction="sum")
                      + F.cross_entropy(logits_ba, labels, reduction="sum"))
        return summed / (2 * n)

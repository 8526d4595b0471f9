"""The multi-modal contrastive loss: against a plain reference, masks, logit scale, and 2 gloo ranks."""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from astrofm.losses import MODALITY_ORDER, ContrastiveLossConfig, MultiModalContrastiveLoss

MODS = ("spectrum", "photometry", "image")


def reference_loss(emb: dict, masks: dict, logit_scale: torch.Tensor, scale_max: float = 100.0):
    """Plain per-pair code: keep the rows that have both modalities, CLIP loss on them, sum pairs."""
    scale = logit_scale.exp().clamp(max=scale_max)
    present = [m for m in MODS if m in emb]
    total, parts = torch.zeros(()), {}
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            rows = [k for k in range(emb[a].shape[0]) if masks[a][k] and masks[b][k]]
            if len(rows) < 2:
                continue
            logits = scale * emb[a][rows] @ emb[b][rows].T
            target = torch.arange(len(rows))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            parts[f"{a}-{b}"] = loss
            total = total + loss
    return total, parts


def random_inputs(seed: int, batch: int = 12, dim: int = 8, p_present: float = 0.6):
    g = torch.Generator().manual_seed(seed)
    emb = {m: F.normalize(torch.randn(batch, dim, generator=g), dim=1).requires_grad_() for m in MODS}
    masks = {m: torch.rand(batch, generator=g) < p_present for m in MODS}
    return emb, masks


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_value_and_gradients(seed, local_loss):
    emb, masks = random_inputs(seed)
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss_fn = MultiModalContrastiveLoss(ContrastiveLossConfig(local_loss=local_loss))
    total, parts = loss_fn(emb, masks, scale)
    grads = torch.autograd.grad(total, [*emb.values(), scale])

    ref_emb = {m: e.detach().clone().requires_grad_() for m, e in emb.items()}
    ref_scale = scale.detach().clone().requires_grad_()
    ref_total, ref_parts = reference_loss(ref_emb, masks, ref_scale)
    ref_grads = torch.autograd.grad(ref_total, [*ref_emb.values(), ref_scale])

    torch.testing.assert_close(total, ref_total)
    assert parts.keys() == ref_parts.keys()
    for name in parts:
        torch.testing.assert_close(parts[name], ref_parts[name].detach())
        assert not parts[name].requires_grad
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_pair_names_follow_modality_order():
    emb, _ = random_inputs(5)
    masks = {m: torch.ones(12, dtype=torch.bool) for m in MODS}
    reordered = {m: emb[m] for m in reversed(MODS)}  # dict order must not matter
    _, parts = MultiModalContrastiveLoss()(reordered, masks, torch.tensor(2.0))
    assert list(parts) == ["spectrum-photometry", "spectrum-image", "photometry-image"]
    assert MODALITY_ORDER == MODS


def test_modality_order_matches_the_dataset_format():
    from astrofm.data.format import MODALITIES

    assert MODALITY_ORDER == MODALITIES


def test_pair_with_fewer_than_two_objects_is_left_out():
    emb, _ = random_inputs(6, batch=6)
    masks = {"spectrum": torch.ones(6, dtype=torch.bool),
             "photometry": torch.ones(6, dtype=torch.bool),
             "image": torch.tensor([True, False, False, False, False, False])}
    total, parts = MultiModalContrastiveLoss()(emb, masks, torch.tensor(2.0))
    assert list(parts) == ["spectrum-photometry"]
    torch.testing.assert_close(total, parts["spectrum-photometry"])


def test_missing_modality_rows_do_not_change_the_loss():
    emb, _ = random_inputs(7, batch=10)
    masks = {m: torch.ones(10, dtype=torch.bool) for m in MODS}
    masks["image"][[2, 5]] = False
    masks["spectrum"][7] = False
    scale = torch.tensor(2.5)
    total, parts = MultiModalContrastiveLoss()(emb, masks, scale)

    changed = {m: e.detach().clone() for m, e in emb.items()}
    changed["image"][[2, 5]] = F.normalize(torch.randn(2, 8), dim=1)
    changed["spectrum"][7] = -changed["spectrum"][7]
    total2, parts2 = MultiModalContrastiveLoss()(changed, masks, scale)
    torch.testing.assert_close(total2, total, rtol=0, atol=0)
    for name in parts:
        torch.testing.assert_close(parts2[name], parts[name], rtol=0, atol=0)

    # ...and the object still counts in the pairs it has: its photometry embedding matters.
    changed["photometry"][2] = -changed["photometry"][2]
    total3, parts3 = MultiModalContrastiveLoss()(changed, masks, scale)
    assert not torch.equal(parts3["spectrum-photometry"], parts["spectrum-photometry"])
    torch.testing.assert_close(parts3["spectrum-image"], parts["spectrum-image"], rtol=0, atol=0)

    # The masked rows get no gradient.
    leaf = {m: e.detach().clone().requires_grad_() for m, e in emb.items()}
    total4, _ = MultiModalContrastiveLoss()(leaf, masks, scale)
    total4.backward()
    assert torch.all(leaf["image"].grad[[2, 5]] == 0)
    assert torch.all(leaf["spectrum"].grad[7] == 0)


def test_a_modality_absent_from_the_batch():
    emb, _ = random_inputs(8, batch=8)
    masks = {m: torch.ones(8, dtype=torch.bool) for m in MODS}
    without_image = {m: emb[m] for m in ("spectrum", "photometry")}
    scale = torch.tensor(2.0)

    # The key is missing from the embeddings (the collate function drops a modality nobody has).
    total, parts = MultiModalContrastiveLoss()(without_image, {**masks, "image": torch.zeros(8, dtype=bool)},
                                               scale)
    assert list(parts) == ["spectrum-photometry"]
    ref, _ = reference_loss(without_image, masks, scale)
    torch.testing.assert_close(total, ref)

    # Embeddings present but every mask False: same result.
    total2, parts2 = MultiModalContrastiveLoss()(emb, {**masks, "image": torch.zeros(8, dtype=bool)}, scale)
    assert list(parts2) == ["spectrum-photometry"]
    torch.testing.assert_close(total2, total)

    # A mask without any embedding is an error only if it claims objects are present.
    with pytest.raises(ValueError, match="embeddings\\['image'\\] is missing"):
        MultiModalContrastiveLoss()(without_image, masks, scale)


def test_no_countable_pair_gives_zero_with_a_working_backward():
    emb, _ = random_inputs(9, batch=4)
    only_spectrum = {"spectrum": emb["spectrum"]}
    scale = torch.tensor(2.0, requires_grad=True)
    total, parts = MultiModalContrastiveLoss()(only_spectrum, {}, scale)
    assert parts == {} and total.item() == 0.0
    total.backward()
    assert torch.all(emb["spectrum"].grad == 0) and scale.grad == 0


def test_logit_scale_is_clamped_and_receives_gradient():
    emb, _ = random_inputs(10, batch=16)
    masks = {m: torch.ones(16, dtype=torch.bool) for m in MODS}
    loss_fn = MultiModalContrastiveLoss(ContrastiveLossConfig(logit_scale_max=20.0))

    at_max, _ = loss_fn(emb, masks, torch.tensor(math.log(20.0)))
    above, _ = loss_fn(emb, masks, torch.tensor(math.log(500.0)))
    torch.testing.assert_close(above, at_max)

    # Below the bound: the gradient is the reference one, and not zero.
    scale = torch.tensor(1.0, requires_grad=True)
    loss_fn(emb, masks, scale)[0].backward()
    ref_scale = torch.tensor(1.0, requires_grad=True)
    reference_loss({m: e.detach() for m, e in emb.items()}, masks, ref_scale, 20.0)[0].backward()
    assert scale.grad is not None and scale.grad.abs() > 1e-4
    torch.testing.assert_close(scale.grad, ref_scale.grad)

    # Above the bound: a gradient that would raise the scale further is dropped...
    aligned = {m: emb["spectrum"].detach() for m in MODS}
    scale = torch.tensor(math.log(500.0), requires_grad=True)
    loss_fn(aligned, masks, scale)[0].backward()
    assert scale.grad == 0
    # ...and one that lowers it passes, so the parameter is never stuck above the bound.
    anti = {"spectrum": emb["spectrum"].detach(), "photometry": -emb["spectrum"].detach()}
    scale = torch.tensor(math.log(500.0), requires_grad=True)
    loss_fn(anti, {m: masks[m] for m in anti}, scale)[0].backward()
    assert scale.grad > 0


def test_aligned_embeddings_give_a_lower_loss():
    emb, _ = random_inputs(11, batch=32, dim=16)
    masks = {m: torch.ones(32, dtype=torch.bool) for m in MODS}
    scale = torch.tensor(math.log(1 / 0.07))
    random_total, _ = MultiModalContrastiveLoss()(emb, masks, scale)
    aligned = {m: emb["spectrum"] for m in MODS}
    aligned_total, _ = MultiModalContrastiveLoss()(aligned, masks, scale)
    assert aligned_total < 0.1 * random_total
    assert aligned_total < 0.01


def test_random_embeddings_give_about_log_batch_per_pair():
    batch = 64
    g = torch.Generator().manual_seed(12)
    emb = {m: F.normalize(torch.randn(batch, 512, generator=g), dim=1) for m in MODS}
    masks = {m: torch.ones(batch, dtype=torch.bool) for m in MODS}
    _, parts = MultiModalContrastiveLoss()(emb, masks, torch.tensor(0.0))  # scale 1
    assert len(parts) == 3
    for value in parts.values():
        assert abs(value.item() - math.log(batch)) < 0.02


def test_bfloat16_autocast_computes_in_float32():
    emb, masks = random_inputs(13, batch=16)
    scale = torch.tensor(math.log(1 / 0.07))
    want, _ = MultiModalContrastiveLoss()(emb, masks, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = MultiModalContrastiveLoss()(emb, masks, scale)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------------
# Two gloo ranks against one process on the concatenated batch

CONFIGS = [(False, True), (True, True), (False, False), (True, False)]  # (local_loss, gather_with_grad)
IN_DIM, EMB_DIM = 5, 8


def _scenario(name: str):
    """Fixed inputs, masks and per-rank row ranges; the linear layers map inputs to embeddings."""
    g = torch.Generator().manual_seed(123 if name == "equal" else 456)
    sizes = (6, 6) if name == "equal" else (5, 3)
    n = sum(sizes)
    inputs = {m: torch.randn(n, IN_DIM, generator=g) for m in MODS}
    weights = {m: torch.randn(EMB_DIM, IN_DIM, generator=g) for m in MODS}
    masks = {m: torch.rand(n, generator=g) < 0.75 for m in MODS}
    if name == "uneven":  # rank 1 has no image at all, and passes no image embedding
        masks["image"][sizes[0]:] = False
        masks["image"][:3] = True
    bounds = [(0, sizes[0]), (sizes[0], n)]
    return inputs, weights, masks, bounds


def _run_loss(config, inputs, weights, masks, rows, skip_absent):
    params = {m: w.clone().requires_grad_() for m, w in weights.items()}
    logit_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    lo, hi = rows
    local_masks = {m: masks[m][lo:hi] for m in MODS}
    emb = {m: F.normalize(inputs[m][lo:hi] @ params[m].T, dim=1) for m in MODS
           if not (skip_absent and not local_masks[m].any())}
    total, parts = MultiModalContrastiveLoss(config)(emb, local_masks, logit_scale)
    total.backward()
    grads = {m: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for m, p in params.items()}
    grads["logit_scale"] = logit_scale.grad.clone()
    return total.detach(), {k: v.clone() for k, v in parts.items()}, grads


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        results = {}
        for name in ("equal", "uneven"):
            inputs, weights, masks, bounds = _scenario(name)
            for local_loss, with_grad in CONFIGS:
                config = ContrastiveLossConfig(local_loss=local_loss, gather_with_grad=with_grad)
                total, parts, grads = _run_loss(config, inputs, weights, masks, bounds[rank], skip_absent=True)
                for grad in grads.values():  # what DDP does: average the gradients over ranks
                    dist.all_reduce(grad)
                    grad /= world
                results[(name, local_loss, with_grad)] = (total, parts, grads)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    world = 2
    context = mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world,
                       join=False)
    deadline = time.monotonic() + 60
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("distributed workers did not finish within 60 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()

    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for name in ("equal", "uneven"):
        inputs, weights, masks, _ = _scenario(name)
        n = masks["spectrum"].shape[0]
        want_total, want_parts, want_grads = _run_loss(ContrastiveLossConfig(), inputs, weights, masks, (0, n),
                                                       skip_absent=False)
        for local_loss, with_grad in CONFIGS:
            for rank, results in enumerate(per_rank):
                total, parts, grads = results[(name, local_loss, with_grad)]
                where = f"{name} local_loss={local_loss} gather_with_grad={with_grad} rank={rank}"
                # The reported loss is the global loss, on every rank.
                torch.testing.assert_close(total, want_total, msg=where)
                assert parts.keys() == want_parts.keys(), where
                for key in parts:
                    torch.testing.assert_close(parts[key], want_parts[key], msg=where)
                if local_loss and not with_grad:
                    continue  # documented approximation: negatives' gradients stay on the other ranks
                # DDP's average of the per-rank gradients is the single-process gradient.
                for key, want in want_grads.items():
                    torch.testing.assert_close(grads[key], want, msg=f"{where} grad {key}")

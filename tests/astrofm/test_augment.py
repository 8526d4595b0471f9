"""Physics augmentations: dihedral image transforms, noise redraws, masks, switches, determinism."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from astrofm.augment import AugmentConfig, augment_batch
from astrofm.data.collate import collate_samples
from tests.conftest import synthetic_sample

MODS = ("spectrum", "photometry", "image")
OFF = AugmentConfig(image_rot90=False, image_flip=False, spectrum_noise=False, photometry_noise=False)


def make_batch(n: int = 12) -> dict:
    """A collated batch; object 3 lacks its spectrum, object 5 its image; the image ivar varies."""
    samples = [synthetic_sample(i, missing={3: "spectrum", 5: "image"}.get(i)) for i in range(n)]
    for i, sample in enumerate(samples):
        if sample.image is not None:
            sample.image["ivar"] = torch.rand(sample.image["flux"].shape,
                                              generator=torch.Generator().manual_seed(i)).numpy() + 0.5
        if sample.spectrum is not None:
            sample.spectrum["ivar"][:7] = 0.0  # bad pixels
    batch = collate_samples(samples, MODS)
    batch["photometry"]["flux_err"][0, 1] = 0.0
    return batch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(-1,)) for r in rotations]


def which_transform(before: torch.Tensor, after: torch.Tensor) -> int:
    matches = [i for i, t in enumerate(dihedral(before)) if torch.equal(t, after)]
    assert matches, "the image is not a rotation or flip of the original"
    return matches[0]


def test_rotations_and_flips_keep_flux_and_move_ivar_with_it():
    batch = make_batch(40)
    out = augment_batch(batch, AugmentConfig(spectrum_noise=False, photometry_noise=False), gen())
    seen = set()
    for row in range(40):
        before, after = batch["image"]["flux"][row], out["image"]["flux"][row]
        torch.testing.assert_close(after.sum(), before.sum())
        if not batch["mask"]["image"][row]:
            continue
        k = which_transform(before, after)
        seen.add(k)
        # The same transform on the ivar, and per band (channels are not mixed).
        assert torch.equal(dihedral(batch["image"]["ivar"][row])[k], out["image"]["ivar"][row])
    assert len(seen) >= 6, f"expected many different transforms across objects, saw {sorted(seen)}"


def test_rotation_only_and_flip_only():
    batch = make_batch(30)
    rot = augment_batch(batch, AugmentConfig(image_flip=False, spectrum_noise=False, photometry_noise=False),
                        gen(1))
    flip = augment_batch(batch, AugmentConfig(image_rot90=False, spectrum_noise=False, photometry_noise=False),
                         gen(1))
    rot_kinds, flip_kinds = set(), set()
    for row in range(30):
        if not batch["mask"]["image"][row]:
            continue
        before = batch["image"]["flux"][row]
        rot_kinds.add(which_transform(before, rot["image"]["flux"][row]))
        flipped = flip["image"]["flux"][row]
        options = {"none": before, "lr": before.flip(-1), "ud": before.flip(-2), "both": before.flip(-1, -2)}
        flip_kinds.add(next(name for name, t in options.items() if torch.equal(t, flipped)))
    assert rot_kinds == {0, 1, 2, 3}
    assert flip_kinds == {"none", "lr", "ud", "both"}


def test_non_square_images_only_turn_by_half_turns():
    batch = {"mask": {"image": torch.ones(16, dtype=torch.bool)},
             "image": {"flux": torch.randn(16, 2, 4, 6), "ivar": torch.rand(16, 2, 4, 6)}}
    out = augment_batch(batch, AugmentConfig(), gen(2))
    assert out["image"]["flux"].shape == (16, 2, 4, 6)
    torch.testing.assert_close(out["image"]["flux"].sum(dim=(1, 2, 3)), batch["image"]["flux"].sum(dim=(1, 2, 3)))


def test_spectrum_noise_has_the_ivar_variance():
    n, length = 400, 500
    ivar = torch.rand(n, length, generator=gen(3)) * 4 + 0.25
    flux = torch.randn(n, length, generator=gen(4))
    batch = {"mask": {"spectrum": torch.ones(n, dtype=torch.bool)}, "spectrum": {"flux": flux, "ivar": ivar}}
    out = augment_batch(batch, AugmentConfig(), gen(5))
    pulls = (out["spectrum"]["flux"] - flux) * ivar.sqrt()  # should be N(0, 1)
    count = pulls.numel()
    assert abs(pulls.mean().item()) < 5 / math.sqrt(count)
    assert abs(pulls.var().item() - 1) < 5 * math.sqrt(2 / count)
    assert torch.equal(out["spectrum"]["ivar"], ivar)


def test_photometry_noise_has_the_flux_err_variance():
    n, bands = 20000, 5
    err = torch.rand(n, bands, generator=gen(6)) + 0.1
    flux = torch.randn(n, bands, generator=gen(7)) + 10
    batch = {"mask": {"photometry": torch.ones(n, dtype=torch.bool)},
             "photometry": {"flux": flux, "flux_err": err}}
    out = augment_batch(batch, AugmentConfig(noise_scale=2.0), gen(8))
    pulls = (out["photometry"]["flux"] - flux) / (2.0 * err)
    count = pulls.numel()
    assert abs(pulls.mean().item()) < 5 / math.sqrt(count)
    assert abs(pulls.var().item() - 1) < 5 * math.sqrt(2 / count)


def test_image_noise_has_the_ivar_variance_and_spares_bad_pixels_and_missing_images():
    batch = make_batch(200)
    batch["image"]["ivar"][:, 0, :2] = 0.0  # a masked strip in the first band
    config = AugmentConfig(image_rot90=False, image_flip=False, image_noise=True, noise_scale=1.5)
    out = augment_batch(batch, config, gen(20))
    flux, ivar = batch["image"]["flux"], batch["image"]["ivar"]
    present = batch["mask"]["image"]
    assert not present[5]
    assert torch.equal(out["image"]["flux"][5], flux[5]) and torch.equal(out["image"]["ivar"], ivar)
    bad = (ivar == 0) & present[:, None, None, None]
    assert bad.any() and torch.equal(out["image"]["flux"][bad], flux[bad])
    good = (ivar > 0) & present[:, None, None, None]
    pulls = (out["image"]["flux"] - flux)[good] * ivar[good].sqrt() / 1.5  # should be N(0, 1)
    count = pulls.numel()
    assert abs(pulls.mean().item()) < 5 / math.sqrt(count)
    assert abs(pulls.var().item() - 1) < 5 * math.sqrt(2 / count)


def test_image_noise_is_drawn_after_the_turn_so_it_follows_the_turned_ivar():
    batch = make_batch()
    batch["image"]["ivar"][:, :, :, :4] = 0.0  # the left half of every stamp carries no information
    out = augment_batch(batch, AugmentConfig(image_noise=True), gen(21))
    moved, untouched_by_noise = out["image"], augment_batch(batch, AugmentConfig(), gen(21))["image"]
    assert torch.equal(moved["ivar"], untouched_by_noise["ivar"])  # same draws of turns and flips
    dead = moved["ivar"] == 0
    assert torch.equal(moved["flux"][dead], untouched_by_noise["flux"][dead])
    assert not torch.equal(moved["flux"][~dead], untouched_by_noise["flux"][~dead])


def test_bad_pixels_and_masked_rows_are_untouched():
    batch = make_batch()
    out = augment_batch(batch, AugmentConfig(), gen(9))
    spec, new_spec = batch["spectrum"], out["spectrum"]
    bad = spec["ivar"] == 0
    assert bad[:, :7].all()
    assert torch.equal(new_spec["flux"][bad], spec["flux"][bad])
    good_rows = batch["mask"]["spectrum"]
    assert not torch.equal(new_spec["flux"][good_rows][:, 7:], spec["flux"][good_rows][:, 7:])
    assert torch.equal(new_spec["flux"][3], spec["flux"][3])  # object 3 has no spectrum
    assert torch.equal(out["photometry"]["flux"][0, 1], batch["photometry"]["flux"][0, 1])  # flux_err 0
    assert out["photometry"]["flux"][0, 0] != batch["photometry"]["flux"][0, 0]
    for name in ("flux", "ivar"):  # object 5 has no image
        assert torch.equal(out["image"][name][5], batch["image"][name][5])

    # Masked rows keep any content they hold, not just the zero fill.
    filled = copy.deepcopy(batch)
    filled["spectrum"]["flux"][3] = 7.0
    filled["spectrum"]["ivar"][3] = 1.0
    filled["image"]["flux"][5] = torch.arange(3 * 64, dtype=torch.float32).reshape(3, 8, 8)
    out = augment_batch(filled, AugmentConfig(), gen(9))
    assert torch.equal(out["spectrum"]["flux"][3], filled["spectrum"]["flux"][3])
    assert torch.equal(out["image"]["flux"][5], filled["image"]["flux"][5])


@pytest.mark.parametrize("switch, modality", [("spectrum_noise", "spectrum"), ("photometry_noise", "photometry"),
                                              ("image", "image")])
def test_each_switch_off_leaves_its_modality_alone(switch, modality):
    batch = make_batch()
    off = {"image_rot90": False, "image_flip": False} if switch == "image" else {switch: False}
    out = augment_batch(batch, AugmentConfig(**off), gen(10))
    for name, value in batch[modality].items():
        assert torch.equal(out[modality][name], value)
    for other in set(MODS) - {modality}:
        assert not torch.equal(out[other]["flux"], batch[other]["flux"])


def test_all_off_is_the_identity():
    batch = make_batch()
    out = augment_batch(batch, OFF, gen(11))
    for m in MODS:
        for name, value in batch[m].items():
            assert torch.equal(out[m][name], value)
    assert out["id"] == batch["id"] and out["mask"] is batch["mask"]


def test_seeded_generator_is_deterministic():
    batch = make_batch()
    a = augment_batch(batch, AugmentConfig(), gen(12))
    b = augment_batch(batch, AugmentConfig(), gen(12))
    c = augment_batch(batch, AugmentConfig(), gen(13))
    for m in MODS:
        for name in batch[m]:
            assert torch.equal(a[m][name], b[m][name])
    assert not torch.equal(a["spectrum"]["flux"], c["spectrum"]["flux"])


def test_input_batch_is_not_mutated():
    batch = make_batch()
    snapshot = copy.deepcopy(batch)
    augment_batch(batch, AugmentConfig(), gen(14))
    for m in MODS:
        for name, value in snapshot[m].items():
            assert torch.equal(batch[m][name], value)
    for m, mask in snapshot["mask"].items():
        assert torch.equal(batch["mask"][m], mask)


def test_only_modalities_in_the_batch():
    batch = make_batch()
    del batch["image"], batch["photometry"]
    out = augment_batch(batch, AugmentConfig(), gen(15))
    assert "image" not in out and "photometry" not in out
    assert not torch.equal(out["spectrum"]["flux"], batch["spectrum"]["flux"])
    # Without masks every row counts as present.
    bare = {"photometry": {"flux": torch.zeros(4, 2), "flux_err": torch.ones(4, 2)}}
    assert (augment_batch(bare, AugmentConfig(), gen(16))["photometry"]["flux"] != 0).all()

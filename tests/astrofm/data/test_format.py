"""Dataset format v1: round trip, atomic writes, splits, checksums, plain-tar and webdataset readability."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import webdataset as wds

from astrofm.data import (
    Dataset,
    DatasetWriter,
    DataValidationError,
    WriterConfig,
    assign_split,
    load_manifest,
)
from astrofm.data.format import decode_sample, encode_sample, sample_key
from tests.conftest import TINY_SPEC, synthetic_sample


def test_round_trip_preserves_every_array_label_and_missing_modality(make_dataset):
    path = make_dataset(n=30, shard_size=4, missing_every=3)
    read = {s.id: s for s in Dataset(path).iter_samples()}
    assert len(read) == 30
    for i in range(30):
        original = synthetic_sample(i, missing="spectrum" if i % 3 == 0 else None)
        got = read[original.id]
        assert got.modalities == original.modalities
        assert got.labels == original.labels
        for modality in original.modalities:
            for name, array in getattr(original, modality).items():
                np.testing.assert_allclose(getattr(got, modality)[name], array.astype(np.float32))
        assert got.meta["split"] == assign_split(original.id)


def test_manifest_records_counts_checksums_spec_and_statistics(make_dataset):
    path = make_dataset(n=30, shard_size=4, missing_every=3)
    manifest = load_manifest(path)
    assert manifest.count() == 30
    assert sum(manifest.modality_counts[s].get("spectrum", 0) for s in manifest.splits) == 20
    for shards in manifest.splits.values():
        for shard in shards:
            assert shard.count <= 4 and len(shard.sha256) == 64
            assert (path / shard.path).stat().st_size == shard.bytes
    assert manifest.spec == TINY_SPEC
    assert manifest.labels == {"index": "int", "kind": "str", "redshift": "float"}
    stats = manifest.statistics
    assert len(stats["photometry"]["flux_median"]) == 2
    assert 8 < stats["photometry"]["flux_median"][0] < 12  # synthetic fluxes are N(10, 1)
    assert stats["labels"]["index"]["count"] == manifest.count("train")
    assert not Dataset(path).verify()


def test_shard_names_follow_split_and_six_digit_index(make_dataset):
    path = make_dataset(n=30, shard_size=4)
    names = sorted(p.name for p in (path / "shards").iterdir())
    assert all(n.split("-")[0] in ("train", "val", "test") and n.endswith(".tar") for n in names)
    assert "train-000000.tar" in names and "train-000001.tar" in names
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no staging folder left


def test_shards_open_with_plain_tar_and_webdataset(make_dataset):
    path = make_dataset(n=10, shard_size=10, all_train=True)
    shard = path / "shards" / "train-000000.tar"
    listing = subprocess.run(["tar", "tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    assert "obj-00000.json" in listing and "obj-00000.spectrum.npz" in listing
    samples = list(wds.WebDataset(str(shard), shardshuffle=False).decode())
    assert len(samples) == 10
    first = samples[0]
    assert first["json"]["id"] == "obj-00000"
    assert first["image.npz"]["flux"].shape == (3, 8, 8)  # webdataset's own npz decoder


def test_splits_are_deterministic_and_near_requested_fractions():
    ids = [f"galaxy-{i}" for i in range(20000)]
    splits = [assign_split(i) for i in ids]
    assert splits == [assign_split(i) for i in ids]
    fractions = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(fractions["train"] - 0.8) < 0.015 and abs(fractions["val"] - 0.1) < 0.01


def test_identical_input_gives_byte_identical_shards(tmp_path):
    def write(name):
        with DatasetWriter(tmp_path / name, TINY_SPEC, config=WriterConfig(shard_size=3)) as writer:
            for i in range(12):
                writer.add(synthetic_sample(i))
        return [s.sha256 for shards in load_manifest(tmp_path / name).splits.values() for s in shards]

    assert write("a") == write("b")


def test_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "broken"
    with pytest.raises(DataValidationError):
        with DatasetWriter(out, TINY_SPEC, config=WriterConfig(shard_size=2)) as writer:
            for i in range(5):
                writer.add(synthetic_sample(i))
            bad = synthetic_sample(99)
            bad.spectrum["flux"][3] = np.nan
            writer.add(bad, source="input.fits")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.spectrum.update(flux=np.zeros(7)), "spectrum.flux"),
    (lambda s: s.image.update(ivar=-np.ones((3, 8, 8))), "image.ivar"),
    (lambda s: s.photometry.update(flux_err=np.array([1.0, np.inf])), "photometry.flux_err"),
    (lambda s: s.labels.update(redshift=float("nan")), "labels.redshift"),
    (lambda s: s.photometry.pop("flux_err"), "photometry.flux_err"),
])
def test_bad_objects_are_refused_naming_file_object_and_field(tmp_path, mutate, field):
    sample = synthetic_sample(1)
    mutate(sample)
    writer = DatasetWriter(tmp_path / "out", TINY_SPEC)
    with pytest.raises(DataValidationError) as caught:
        writer.add(sample, source="survey.fits")
    writer.abort()
    message = str(caught.value)
    assert "survey.fits" in message and "obj-00001" in message and field in message


def test_duplicate_ids_are_refused(tmp_path):
    writer = DatasetWriter(tmp_path / "out", TINY_SPEC)
    writer.add(synthetic_sample(1))
    with pytest.raises(DataValidationError, match="duplicate id"):
        writer.add(synthetic_sample(1))
    writer.abort()
    assert not (tmp_path / "out").exists()


def test_existing_folder_is_not_overwritten_unless_asked(make_dataset):
    path = make_dataset(n=5)
    with pytest.raises(FileExistsError):
        DatasetWriter(path, TINY_SPEC)
    with DatasetWriter(path, TINY_SPEC, config=WriterConfig(overwrite=True)) as writer:
        writer.add(synthetic_sample(100))
    assert load_manifest(path).count() == 1


def test_keys_are_safe_for_webdataset_and_ids_survive():
    sample = synthetic_sample(3)
    sample.id = "J1234.5+6789 a/b"
    members = encode_sample(sample)
    assert members["__key__"] == sample_key(sample.id) == "J1234_5_6789_a_b"
    assert decode_sample(members).id == sample.id


def test_verify_detects_a_corrupted_shard(make_dataset):
    path = make_dataset(n=20, shard_size=5)
    shard = next((path / "shards").iterdir())
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = Dataset(path).verify()
    assert len(problems) == 1 and shard.name in str(problems[0]) and "sha256" in str(problems[0])


def test_manifest_with_wrong_version_is_refused(make_dataset):
    path = make_dataset(n=3)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format_version"):
        load_manifest(path)


def test_truncated_shard_reads_as_a_clear_error(make_dataset):
    path = make_dataset(n=10, shard_size=10, all_train=True)
    shard = path / "shards" / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ValueError, match="train-000000.tar"):
        list(Dataset(path).iter_samples())

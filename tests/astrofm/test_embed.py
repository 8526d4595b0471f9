"""`astrofm embed`: the Parquet store's schema and contents, agreement with the model, splits, atomicity,
part-file merging, and (slow) two-rank distributed predict through the CLI."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import astrofm
from astrofm.cli.main import main
from astrofm.data import Dataset
from astrofm.data.manifest import sha256_file
from astrofm.embedstore.store import (
    EmbeddingStore,
    ObjectTable,
    UnknownIdError,
    merge_parts,
    rows_table,
    table_vectors,
)
from tests.astrofm.search_helpers import EMBED_DIM, N_OBJECTS, embed_folder, missing_modality
from tests.pretrain.conftest import astrofm_command, quiet_env


def _expected_ids(world, modality, splits=("train", "val", "test")):
    """Ids of the objects having `modality`, in dataset order (split, shard, position)."""
    dataset = Dataset(world.dataset)
    return [s.id for split in splits for s in dataset.iter_samples(split) if getattr(s, modality) is not None]


def test_parquet_schema_is_readable_by_pyarrow_and_pandas(world):
    for modality in ("spectrum", "photometry", "image"):
        path = world.embeddings / f"{modality}.parquet"
        table = pq.read_table(path)
        assert table.column_names[:3] == ["id", "split", "embedding"]
        assert table.schema.field("id").type == pa.string()
        assert table.schema.field("split").type == pa.string()
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), EMBED_DIM)
        assert {"redshift", "index", "kind", "survey", "domain"} <= set(table.column_names)
        assert table.schema.field("redshift").type == pa.float64()
        frame = pd.read_parquet(path)
        assert list(frame["id"]) == table.column("id").to_pylist()
        assert np.stack(frame["embedding"].to_numpy()).shape == (len(frame), EMBED_DIM)
        vectors = table_vectors(table)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_only_objects_having_the_modality_appear_in_dataset_order(world):
    counts = {}
    for modality in ("spectrum", "photometry", "image"):
        ids = pq.read_table(world.embeddings / f"{modality}.parquet", columns=["id"]).column("id").to_pylist()
        assert ids == _expected_ids(world, modality)
        counts[modality] = len(ids)
    lacking = {m: sum(missing_modality(i) == m for i in range(N_OBJECTS)) for m in ("spectrum", "image")}
    assert counts == {"spectrum": N_OBJECTS - lacking["spectrum"], "photometry": N_OBJECTS,
                      "image": N_OBJECTS - lacking["image"]}


def test_object_table_finds_what_a_filtered_read_finds(world):
    ids = pq.read_table(world.embeddings / "image.parquet", columns=["id"]).column("id").to_pylist()
    store = EmbeddingStore.open(world.embeddings)
    filtered = {object_id: store.vector("image", object_id) for object_id in ids[::5]}  # before objects()
    objects = store.objects("image")
    assert store.objects("image") is objects  # read once, then kept
    for object_id, vector in filtered.items():
        np.testing.assert_array_equal(objects.vector(object_id), vector)
        np.testing.assert_array_equal(store.vector("image", object_id), vector)  # now from memory
    fields = objects.fields(ids[3])
    assert fields["id"] == ids[3] and "embedding" not in fields and fields["survey"] == "test"
    assert fields["index"] == int(ids[3].split("-")[1])
    with pytest.raises(UnknownIdError, match="obj-99999.*image"):
        objects.vector("obj-99999")


def test_object_table_takes_a_repeated_id_s_first_row(tmp_path):
    path = tmp_path / "spectrum.parquet"
    vectors = np.eye(3, dtype=np.float32)
    pq.write_table(rows_table(["a", "b", "a"], ["train"] * 3, np.arange(3), vectors, [{"n": i} for i in range(3)]),
                   path)
    objects = ObjectTable.read(path, "spectrum")
    np.testing.assert_array_equal(objects.vector("a"), vectors[0])
    assert objects.fields("a")["n"] == 0 and objects.fields("b")["n"] == 1


def test_manifest_has_fingerprints_dimension_and_counts(world):
    manifest = json.loads((world.embeddings / "manifest.json").read_text())
    assert manifest["format"] == "astrofm-embeddings" and manifest["dimension"] == EMBED_DIM
    assert manifest["model"]["sha256"] == sha256_file(world.model / "model.safetensors")
    assert manifest["dataset"]["manifest_sha256"] == sha256_file(world.dataset / "manifest.json")
    for entry in manifest["modalities"].values():
        table = pq.read_table(world.embeddings / entry["file"])
        assert entry["count"] == len(table) == sum(entry["counts"].values())
        assert entry["counts"]["test"] == table.column("split").to_pylist().count("test")
        assert entry["sha256"] == sha256_file(world.embeddings / entry["file"])


def test_embeddings_equal_the_model_run_directly(world):
    from astrofm.embeddings import embed_split

    direct = embed_split(astrofm.load_model(world.model), str(world.dataset), split="train", batch_size=7)
    for modality in ("spectrum", "image"):
        table = pq.read_table(world.embeddings / f"{modality}.parquet")
        stored = dict(zip(table.column("id").to_pylist(), table_vectors(table), strict=True))
        mask = direct.masks[modality]
        ids = [oid for oid, has in zip(direct.ids, mask.tolist(), strict=True) if has]
        assert ids and all(oid in stored for oid in ids)
        np.testing.assert_allclose(np.stack([stored[oid] for oid in ids]),
                                   direct.embeddings[modality][mask].numpy(), atol=1e-5)


def test_split_option_and_cli_summary(world, tmp_path, capsys):
    out = tmp_path / "test-only"
    code = main(["embed", "--model", str(world.model), "--data", str(world.dataset), "--out", str(out),
                 "--split", "test", "--batch-size", "4", "--no-progress"])
    assert code == 0
    assert "spectrum" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == ["test"]
    table = pq.read_table(out / "image.parquet")
    assert set(table.column("split").to_pylist()) == {"test"}
    assert table.column("id").to_pylist() == _expected_ids(world, "image", ("test",))


def test_many_part_files_merge_to_the_same_store(world, tmp_path):
    out = embed_folder(world.model, world.dataset, tmp_path / "parts", flush_rows=5)
    for modality in ("spectrum", "photometry", "image"):
        merged, reference = pq.read_table(out / f"{modality}.parquet"), pq.read_table(
            world.embeddings / f"{modality}.parquet")
        assert merged.column_names == reference.column_names
        assert merged.column("id").equals(reference.column("id"))
        np.testing.assert_allclose(table_vectors(merged), table_vectors(reference), atol=1e-6)


def test_mixed_field_types_across_parts_become_text(tmp_path):
    vectors = np.eye(2, 4, dtype=np.float32)
    first = rows_table(["a"], ["train"], np.array([1]), vectors[:1], [{"note": 3.5, "nested": {"x": 1}}])
    second = rows_table(["b"], ["test"], np.array([0]), vectors[1:], [{"note": "bright"}])
    pq.write_table(first, tmp_path / "p0.parquet")
    pq.write_table(second, tmp_path / "p1.parquet")
    table = merge_parts([tmp_path / "p0.parquet", tmp_path / "p1.parquet"], tmp_path / "out.parquet", 4, [])
    assert table.column("id").to_pylist() == ["b", "a"]  # sorted by the dataset order
    assert table.column("note").to_pylist() == ["bright", "3.5"]
    assert table.column("nested").to_pylist() == [None, '{"x": 1}']
    assert "_index" not in table.column_names


def test_a_failure_leaves_nothing_and_existing_output_is_kept(world, tmp_path, monkeypatch, capsys):
    import astrofm.embedstore.predict as predict

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(predict, "merge_parts", broken)
    out = tmp_path / "emb"
    with pytest.raises(RuntimeError, match="disk full"):
        embed_folder(world.model, world.dataset, out)
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".emb.")]
    monkeypatch.undo()

    args = ["embed", "--model", str(world.model), "--data", str(world.dataset), "--out", str(world.embeddings),
            "--no-progress"]
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err


def test_overwrite_replaces_an_embedding_folder(world, tmp_path):
    out = embed_folder(world.model, world.dataset, tmp_path / "emb", splits=["val"])
    embed_folder(world.model, world.dataset, out, splits=["test"], overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["splits"] == ["test"]
    assert [p.name for p in tmp_path.iterdir()] == ["emb"]


@pytest.mark.parametrize("change, expected", [
    ({"--model": "nowhere"}, "nowhere"),
    ({"--data": "nothing-here"}, "nothing-here"),
    ({"--split": "holdout"}, "holdout"),
])
def test_bad_inputs_are_one_line_errors(world, tmp_path, capsys, change, expected):
    args = {"--model": str(world.model), "--data": str(world.dataset), "--out": str(tmp_path / "x")}
    args.update({k: (str(tmp_path / v) if k != "--split" else v) for k, v in change.items()})
    code = main(["embed", *[part for pair in args.items() for part in pair], "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_model_for_another_spec_is_refused(world, tmp_path, capsys):
    from astrofm.data import DatasetSpec, DatasetWriter, SpectrumSpec, WriterConfig
    from tests.conftest import TINY_SPEC, synthetic_sample

    spec = DatasetSpec(spectrum=SpectrumSpec(wave_min=3600.0, wave_max=3998.0, wave_step=2.0),
                       photometry=TINY_SPEC.photometry, image=TINY_SPEC.image)  # 200 spectrum pixels, not 100
    data = tmp_path / "wide"
    with DatasetWriter(data, spec, config=WriterConfig(shard_size=8)) as writer:
        for i in range(4):
            writer.add(synthetic_sample(i, spec=spec))
    code = main(["embed", "--model", str(world.model), "--data", str(data), "--out", str(tmp_path / "e"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "spectrum spec does not match" in err and "Traceback" not in err


@pytest.mark.slow
def test_two_ranks_through_the_cli_give_the_same_store(world, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(astrofm_command("embed", "--model", str(world.model), "--data", str(world.dataset),
                                            "--out", str(out), "--devices", "2", "--batch-size", "8",
                                            "--no-progress"),
                            capture_output=True, text=True, timeout=300, env=quiet_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["devices"] == 2
    for modality in ("spectrum", "photometry", "image"):
        two, one = pq.read_table(out / f"{modality}.parquet"), pq.read_table(world.embeddings / f"{modality}.parquet")
        assert two.column("id").equals(one.column("id"))
        np.testing.assert_allclose(table_vectors(two), table_vectors(one), atol=1e-5)
    assert not (out / "parts").exists()

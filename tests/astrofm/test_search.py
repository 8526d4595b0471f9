"""`astrofm search`: by id within a modality, across modalities, from raw FITS files through the model,
the JSON and table outputs, and every kind of bad input as a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import astrofm
from astrofm.cli.main import main
from astrofm.embedstore.store import table_vectors
from astrofm.index import IndexConfig, build_index
from astrofm.search import EmptyIndexError, QueryMismatchError, SearchConfig, embed_file, search
from tests.astrofm.data.fits_factories import sdss_loglam, stamp, write_image_cube, write_sdss_spectrum
from tests.astrofm.search_helpers import (  # noqa: F401  (faiss_one_thread: an autouse fixture)
    build_model,
    faiss_one_thread,
    search_world,
    write_store,
)


@pytest.fixture(scope="module")
def spectrum_index(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("search-index") / "spectra"
    return build_index(IndexConfig(embeddings=str(world.embeddings), modality="spectrum", out=str(out)))


@pytest.fixture(scope="module")
def spectrum_file(tmp_path_factory):
    """An SDSS-format spectrum covering the tiny dataset grid (3600-3798 A)."""
    path = tmp_path_factory.mktemp("files") / "spec-0266-51602-0001.fits"
    return write_sdss_spectrum(path, loglam=sdss_loglam(n=400, start=np.log10(3550.0)), z=0.3)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    return write_image_cube(tmp_path_factory.mktemp("files") / "cutout-0001.fits", data=stamp(3, 8))


def _vectors(world, modality):
    table = pq.read_table(world.embeddings / f"{modality}.parquet")
    return table.column("id").to_pylist(), table_vectors(table)


def _brute_force(ids, vectors, query, k, exclude=None):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != exclude][:k]
    return [ids[i] for i in order], scores[order]


def _cli(capsys, *args):
    code = main(["search", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_search_by_id_leaves_the_query_out_and_matches_numpy(world, spectrum_index, capsys):
    ids, vectors = _vectors(world, "spectrum")
    query = ids[5]
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--id", query, "--k", 7, "--json")
    assert code == 0
    hits = json.loads(out)
    expected_ids, expected_scores = _brute_force(ids, vectors, vectors[5], 7, exclude=query)
    assert [h["id"] for h in hits] == expected_ids
    np.testing.assert_allclose([h["score"] for h in hits], expected_scores, atol=1e-5)
    assert query not in [h["id"] for h in hits]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert {"redshift", "split", "kind"} <= set(hits[0]["labels"])


def test_plain_output_is_a_table(world, spectrum_index, capsys):
    ids, _ = _vectors(world, "spectrum")
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--id", ids[0], "-k", 3)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 5
    assert lines[1].split()[:4] == ["rank", "id", "score", "split"] and "redshift" in lines[1]
    assert lines[2].split()[0] == "1" and lines[2].split()[1].startswith("obj-")


def test_table_leads_with_redshift_and_takes_chosen_labels(world, spectrum_index, capsys):
    ids, _ = _vectors(world, "spectrum")
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--id", ids[0], "-k", 2)
    assert code == 0 and out.splitlines()[1].split()[3:5] == ["split", "redshift"]
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--id", ids[0], "-k", 2, "--labels", "redshift")
    assert code == 0 and out.splitlines()[1].split() == ["rank", "id", "score", "redshift"]
    code, _, err = _cli(capsys, "--index", spectrum_index, "--id", ids[0], "--labels", "colour")
    assert code != 0 and "no label(s) ['colour']" in err and "redshift" in err


def test_cross_modal_query_uses_the_other_modality_and_marks_the_object(world, spectrum_index, capsys):
    ids, vectors = _vectors(world, "spectrum")
    image_ids, image_vectors = _vectors(world, "image")
    query = next(oid for oid in image_ids if oid in ids)
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--id", query, "--query-embeddings", world.embeddings,
                        "--query-modality", "image", "--k", len(ids), "--json")
    assert code == 0
    hits = json.loads(out)
    expected_ids, expected_scores = _brute_force(ids, vectors, image_vectors[image_ids.index(query)], len(ids))
    assert [h["id"] for h in hits] == expected_ids  # the object itself is not left out ...
    np.testing.assert_allclose([h["score"] for h in hits], expected_scores, atol=1e-5)
    assert [h["id"] for h in hits if h["is_query"]] == [query]  # ... but marked


def test_raw_spectrum_file_through_the_model(world, spectrum_index, spectrum_file, capsys):
    from astrofm.data.collate import collate_samples
    from astrofm.data.format import DatasetSpec, Sample
    from astrofm.data.ingest.fitsfile import read_source
    from astrofm.data.ingest.sdss import read_sdss_spectrum

    model = astrofm.load_model(world.model)
    spec = DatasetSpec.from_dict(model.spec)
    record = read_sdss_spectrum(read_source(spectrum_file), spec.spectrum)
    batch = collate_samples([Sample(id="q", spectrum=record.spectrum)], ["spectrum"])
    expected_vector = model.embed(batch)["spectrum"][0].numpy()
    query = embed_file(str(world.model), str(spectrum_file))
    assert query.modality == "spectrum" and query.object_id == "spec-0266-51602-0001"
    np.testing.assert_allclose(query.vector, expected_vector, atol=1e-6)

    code, out, _ = _cli(capsys, "--index", spectrum_index, "--model", world.model, "--query-file", spectrum_file,
                        "--k", 5, "--json")
    assert code == 0
    ids, vectors = _vectors(world, "spectrum")
    expected_ids, expected_scores = _brute_force(ids, vectors, expected_vector, 5)
    assert [h["id"] for h in json.loads(out)] == expected_ids
    np.testing.assert_allclose([h["score"] for h in json.loads(out)], expected_scores, atol=1e-5)


def test_raw_image_file_queries_spectra_only_when_asked(world, spectrum_index, image_file, capsys):
    code, _, err = _cli(capsys, "--index", spectrum_index, "--model", world.model, "--query-file", image_file)
    assert code == 1 and "image" in err and "spectrum" in err and "--query-modality image" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    result = search(SearchConfig(index=str(spectrum_index), k=3, model=str(world.model),
                                 query_file=str(image_file), query_modality="image"))
    assert result.query["modality"] == "image" and len(result.hits) == 3


def _one_line_error(code, err, *needles):
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert str(needle) in err, (needle, err)


def test_unknown_id(spectrum_index, capsys):
    _one_line_error(*_cli(capsys, "--index", spectrum_index, "--id", "no-such-object")[::2], "no-such-object")


def test_unknown_id_in_the_query_embeddings(world, spectrum_index, capsys):
    code, _, err = _cli(capsys, "--index", spectrum_index, "--id", "ghost", "--query-embeddings", world.embeddings,
                        "--query-modality", "image")
    _one_line_error(code, err, "ghost", "image")


def test_dimension_mismatch(spectrum_index, tmp_path, capsys):
    other = write_store(tmp_path / "other", np.eye(3, 16, dtype=np.float32), modality="image")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--id", "v00001", "--query-embeddings", other,
                        "--query-modality", "image")
    _one_line_error(code, err, "dimension 16", "32")


def test_a_query_from_another_model_is_refused_unless_allowed(world, spectrum_index, spectrum_file, tmp_path,
                                                              capsys):
    other = build_model(world.dataset, tmp_path / "other-model", seed=1)
    code, _, err = _cli(capsys, "--index", spectrum_index, "--model", other, "--query-file", spectrum_file)
    _one_line_error(code, err, "another model", "--allow-other-model")
    code, out, _ = _cli(capsys, "--index", spectrum_index, "--model", other, "--query-file", spectrum_file,
                        "--allow-other-model", "--json")
    assert code == 0 and len(json.loads(out)) == 10


def test_k_larger_than_the_index(world, spectrum_index, capsys):
    ids, _ = _vectors(world, "spectrum")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--id", ids[0], "--k", len(ids))
    _one_line_error(code, err, f"k={len(ids)}", f"{len(ids) - 1} vector(s)")
    with pytest.raises(ValueError, match="at least 1"):
        SearchConfig(index=str(spectrum_index), object_id=ids[0], k=0)


def test_an_empty_index(tmp_path, capsys):
    emb = write_store(tmp_path / "emb", np.zeros((0, 8), dtype=np.float32))
    index = build_index(IndexConfig(embeddings=str(emb), modality="spectrum", out=str(tmp_path / "idx")),
                        allow_empty=True)
    code, _, err = _cli(capsys, "--index", index, "--id", "v00000")
    _one_line_error(code, err, "empty", str(index))
    with pytest.raises(EmptyIndexError):
        search(SearchConfig(index=str(index), object_id="v00000"))


def test_files_of_the_wrong_kind(world, spectrum_index, spectrum_file, image_file, tmp_path, capsys):
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file at all\n")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--model", world.model, "--query-file", text)
    _one_line_error(code, err, "notes.fits", "not a readable FITS file")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--model", world.model, "--query-file", image_file,
                        "--query-modality", "spectrum")
    _one_line_error(code, err, "cutout-0001.fits", "image file, not a spectrum")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--model", world.model, "--query-file",
                        tmp_path / "absent.fits")
    _one_line_error(code, err, "absent.fits")
    with pytest.raises(QueryMismatchError):
        embed_file(str(world.model), str(spectrum_file), "image")


def test_missing_or_corrupt_index(spectrum_index, tmp_path, capsys):
    code, _, err = _cli(capsys, "--index", tmp_path / "nowhere", "--id", "x")
    _one_line_error(code, err, "nowhere")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(spectrum_index, copy)
    with open(copy / "index.faiss", "ab") as handle:
        handle.write(b"junk")
    code, _, err = _cli(capsys, "--index", copy, "--id", "x")
    _one_line_error(code, err, "index.faiss", "sha256")


def test_conflicting_query_options(spectrum_index, capsys):
    code, _, err = _cli(capsys, "--index", spectrum_index)
    _one_line_error(code, err, "--id")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--query-file", "x.fits")
    _one_line_error(code, err, "--model")
    code, _, err = _cli(capsys, "--index", spectrum_index, "--id", "obj-00001", "--query-modality", "image")
    _one_line_error(code, err, "--query-embeddings")

"""`astrofm data info`: summary, JSON, and --verify's exit status naming the shard."""

from __future__ import annotations

import json

from astrofm.cli.main import main


def test_info_prints_counts_per_split_and_modality(make_dataset, capsys):
    path = make_dataset(n=30, shard_size=4, missing_every=3)
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "objects: 30" in out and "train" in out and "spectrum" in out and "redshift (float)" in out


def test_info_json_and_verify(make_dataset, capsys):
    path = make_dataset(n=30, shard_size=4)
    assert main(["data", "info", str(path), "--json", "--verify"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == 30 and summary["verify"]["ok"] is True
    assert sum(entry["objects"] for entry in summary["splits"].values()) == 30


def test_verify_fails_with_the_shard_named(make_dataset, capsys):
    path = make_dataset(n=30, shard_size=4)
    shard = sorted((path / "shards").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[:-1024])
    assert main(["data", "info", str(path), "--verify"]) == 1
    assert shard.name in capsys.readouterr().out


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err

"""The README's main job, `astrofm quickstart`, end to end at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pretrain.conftest import quiet_env


@pytest.mark.slow
def test_quickstart_generates_pretrains_exports_and_reports_retrieval(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "astrofm.cli.main", "quickstart", "--out", str(out),
                             "--n", "240", "--epochs", "1"], capture_output=True, text=True, timeout=600,
                            env=quiet_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cross-modal retrieval on the test split" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == 240 and summary["verify_ok"]
    retrieval = summary["test_retrieval"]
    for pair in ("spectrum-photometry", "spectrum-image", "photometry-image"):
        assert 0.0 <= retrieval[f"top10/{pair}"] <= 1.0 and retrieval[f"pool/{pair}"] >= 2
    assert (out / "pretrain" / "model" / "model.safetensors").is_file()
    assert (out / "pretrain" / "checkpoints" / "last.ckpt").is_file()


def test_quickstart_refuses_a_non_empty_folder(tmp_path, capsys):
    from astrofm.cli.main import main

    (tmp_path / "keep.txt").write_text("mine")
    assert main(["quickstart", "--out", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err

"""The README's main job, `astrofm quickstart`, end to end at a tiny size."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.pretrain.conftest import quiet_env


@pytest.mark.slow
def test_quickstart_runs_every_study_and_links_every_plot(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "astrofm.cli.main", "quickstart", "--out", str(out),
                             "--n", "300", "--n-simulated", "100", "--epochs", "1", "--max-minutes", "0"],
                            capture_output=True, text=True, timeout=900, env=quiet_env())
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == 300 and summary["verify_ok"]
    assert summary["pretraining"]["epochs_trained"] == 1 == summary["pretraining"]["max_epochs"]
    assert not summary["pretraining"]["epoch_cut_short"]
    assert summary["pretraining"]["global_step"] > 0 and summary["pretraining"]["max_minutes"] is None
    assert set(summary["simulated"]) == {"sim_slight", "sim_moderate", "sim_strong", "control"}
    for pair in ("spectrum-photometry", "spectrum-image", "photometry-image"):
        assert 0.0 <= summary["test_retrieval"][pair]["top10"] <= 1.0
    assert {(e["target"], e["modality"], e["method"]) for e in summary["regression"]} == {
        (t, m, p) for t in ("redshift", "log_stellar_mass", "log_ssfr") for m in ("spectrum", "image")
        for p in ("knn", "mlp")}
    for name, suite in summary["misspec"]["suites"].items():
        assert 0.0 <= suite["auc"] <= 1.0 and 0.0 <= suite["p_value"] <= 1.0, name
    assert 0.0 <= summary["misspec"]["uncovered_fraction"] <= 1.0
    assert (out / "pretrain" / "model" / "model.safetensors").is_file()
    assert (out / "index" / "index.faiss").is_file()
    # The printed table and the report carry the same studies; every plot the report links exists.
    for heading in ("pretraining", "retrieval (test)", "redshift (test)", "log_stellar_mass (test)", "misspecification"):
        assert heading in result.stdout
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert any(link.startswith("misspec/") and link.endswith(".png") for link in links)
    assert any(link.startswith("retrieval/") for link in links) and any(link.startswith("regression/") for link in links)
    for link in links:
        assert (out / link).is_file(), link


def test_quickstart_refuses_a_non_empty_folder(tmp_path, capsys):
    from astrofm.cli.main import main

    (tmp_path / "keep.txt").write_text("mine")
    assert main(["quickstart", "--out", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_quickstart_refuses_a_survey_too_small_to_split(tmp_path, capsys):
    from astrofm.cli.main import main

    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--n", "10"]) == 1
    assert "--n 10" in capsys.readouterr().err


@pytest.mark.parametrize("spectrum_terms, weight, self_views", [(False, 0.0, []), (True, 1.0, ["spectrum"])])
def test_quickstart_trains_the_cross_modal_loss_alone_unless_asked(tmp_path, capsys, spectrum_terms, weight,
                                                                    self_views):
    """The tiny recipe carries the spectrum-internal terms; the 7-minute quickstart switches them off."""
    import yaml

    from astrofm.cli.quickstart_steps import QuickstartConfig, pretrain_args
    from pretrain.cli import main as pretrain_main

    config = QuickstartConfig(out=str(tmp_path / "qs"), spectrum_terms=spectrum_terms)
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main(pretrain_args(config, tmp_path / "observed") + ["--print_config"])
    assert exit_info.value.code in (None, 0)
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["masked_spectrum"]["weight"] == weight
    assert list(model["self_views"]) == self_views
    assert (model["shift_equivariance"]["weight"] > 0) == spectrum_terms


def test_quickstart_reads_how_far_pretraining_got(tmp_path):
    from astrofm.cli.quickstart_steps import QuickstartConfig, headline, pretraining_extent

    config = QuickstartConfig(out=str(tmp_path / "qs"))  # 30 epochs at most, a 7-minute cap
    training = {"epoch": 12, "global_step": 1550, "epochs_trained": 12, "epoch_partial": True}
    (tmp_path / "config.json").write_text(json.dumps({"training": training}))
    extent = pretraining_extent(config, tmp_path)
    assert extent == {"epochs_trained": 12, "epoch_cut_short": True, "max_epochs": 30, "global_step": 1550,
                      "max_minutes": 7.0}
    empty = {"pairs": {}, "summary": []}
    rows = headline(empty, empty, {"suites": {}, "uncovered_fraction": 0.0}, extent)
    assert rows[0] == ("pretraining", "epochs trained (steps)",
                       "12 and part of one more of at most 30 (1550 steps, 7-minute cap)")

    (tmp_path / "config.json").write_text(json.dumps({"training": {"epoch": 11, "global_step": 1500}}))
    with pytest.raises(ValueError, match="training.epochs_trained"):
        pretraining_extent(config, tmp_path)

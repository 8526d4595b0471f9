"""The quickstart's steps, one function each, and the one report that links what they wrote.

    DIR/data/observed, DIR/data/<suite>   the mock surveys (observed + simulated suites, same seed: paired)
    DIR/pretrain                          the run: checkpoints/, logs, model/
    DIR/embeddings                        every split of the observed survey, embedded
    DIR/index                             a faiss index over the spectrum embeddings
    DIR/retrieval, DIR/regression,        the science reports (metrics.json, PNGs)
    DIR/misspec
    DIR/summary.json, DIR/report.md       the headline numbers and the links to every plot
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIPPED_SUITES = ("sim_slight", "sim_moderate", "sim_strong")
CONTROL_SUITE = "control"  # the observed physics drawn with another seed: the misspecification null
REGRESSION_TARGETS = ("redshift", "log_stellar_mass", "log_ssfr")  # the first also gets its 10%-label rows


@dataclass
class QuickstartConfig:
    out: str
    n: int = 8000  # objects in the observed survey
    n_simulated: int | None = None  # objects per simulated suite; None: half of n, at most 2,500
    suites: list[str] = field(default_factory=lambda: list(SHIPPED_SUITES))
    control: bool = True  # add a suite with the observed physics and another seed
    epochs: int = 30  # pretraining epochs (an upper bound when max_minutes is set)
    max_minutes: float | None = 7.0  # stop pretraining after this long (Lightning max_time)
    recipe: str = str(REPO / "configs" / "pretrain" / "tiny.yaml")
    # The recipe's spectrum-internal terms (masked spectrum, self view) pay off after 15-25 epochs; in a
    # 7-minute run they cost cross-modal retrieval, so the quickstart trains the cross-modal loss alone.
    spectrum_terms: bool = False
    seed: int = 0
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))

    def __post_init__(self):
        if self.n < 50:
            raise ValueError(f"--n {self.n}: the quickstart needs at least 50 objects (train/val/test splits)")
        if self.n_simulated is None:
            self.n_simulated = max(50, min(2500, self.n // 2))
        if self.n_simulated < 50:
            raise ValueError(f"--n-simulated {self.n_simulated}: need at least 50 objects per suite")
        if self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: need at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes {self.max_minutes}: must be positive")

    @property
    def root(self) -> Path:
        return Path(self.out)

    def suite_seeds(self) -> dict[str, int]:
        """Simulated suite -> seed. The shipped suites share the observed seed (paired objects); the
        control suite is the observed physics with the next seed."""
        seeds = {name: self.seed for name in self.suites}
        if self.control:
            seeds[CONTROL_SUITE] = self.seed + 1
        return seeds


def generate_surveys(config: QuickstartConfig) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """The observed survey and each simulated suite; returns their folders and the observed summary."""
    from astrofm.data.reader import Dataset
    from astrofm.data.summary import format_summary, summarize
    from astrofm.sims import MockConfig, generate_mock

    data = config.root / "data"
    observed = data / "observed"
    generate_mock(MockConfig(suite="observed", n=config.n, out=str(observed), seed=config.seed,
                             workers=config.workers, shard_size=max(100, config.n // 20)))
    summary = summarize(Dataset(observed), verify=True)
    print(format_summary(summary))
    simulated = {}
    for name, seed in config.suite_seeds().items():
        suite = "observed" if name == CONTROL_SUITE else name
        print(f"simulated suite {name}: {config.n_simulated} objects ({suite} physics, seed {seed})")
        simulated[name] = data / name
        generate_mock(MockConfig(suite=suite, n=config.n_simulated, out=str(simulated[name]), seed=seed,
                                 workers=config.workers, shard_size=max(100, config.n_simulated // 10)))
    return observed, simulated, summary


def pretrain_args(config: QuickstartConfig, observed: Path) -> list[str]:
    """The `astrofm pretrain` command line of the quickstart's pretraining step."""
    from pretrain.cli import CROSS_MODAL_ONLY

    run_dir = config.root / "pretrain"
    args = ["fit", "--config", config.recipe, "--data.path", str(observed),
            "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", str(config.epochs),
            "--data.num_workers", str(config.workers), "--seed_everything", str(config.seed)]
    if config.max_minutes is not None:
        # Lightning's max_time stops cleanly (last checkpoint and export still happen).
        seconds = int(round(config.max_minutes * 60))
        args += ["--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"]
    if not config.spectrum_terms:
        args += CROSS_MODAL_ONLY
    return args


def pretrain(config: QuickstartConfig, observed: Path) -> Path:
    """The recipe on the observed survey; returns the exported model folder."""
    from pretrain.cli import main as pretrain_main

    pretrain_main(pretrain_args(config, observed))
    return config.root / "pretrain" / "model"


def pretraining_extent(config: QuickstartConfig, model: Path) -> dict[str, Any]:
    """How far pretraining got: the quickstart caps it by time, so its figures follow the cores' speed
    and load, and a reader comparing two runs needs the epoch each one stopped in."""
    training = _read_json(model / "config.json").get("training", {})
    epochs, steps = training.get("epochs_trained"), training.get("global_step")
    if epochs is None or steps is None:
        raise ValueError(f"{model / 'config.json'}: field training.epochs_trained or training.global_step "
                         "missing; not a model exported by astrofm pretrain fit")
    return {"epochs_trained": epochs, "epoch_cut_short": bool(training.get("epoch_partial")),
            "max_epochs": config.epochs, "global_step": steps, "max_minutes": config.max_minutes}


def embed_and_index(config: QuickstartConfig, model: Path, observed: Path) -> tuple[Path, Path, str]:
    """Embeddings of every observed split, a spectrum index, and one similarity search as a demo."""
    from astrofm.embedstore import EmbedConfig, embed
    from astrofm.index import IndexConfig, build_index
    from astrofm.search import SearchConfig, format_table, search

    embeddings = config.root / "embeddings"
    embed(EmbedConfig(model=str(model), data=str(observed), out=str(embeddings), progress=False))
    index = build_index(IndexConfig(embeddings=str(embeddings), modality="spectrum", out=str(config.root / "index")))
    from astrofm.embedstore import EmbeddingStore

    first_test = EmbeddingStore.open(embeddings).read("spectrum", columns=["id", "split"], splits=["test"])
    query = first_test.column("id")[0].as_py()
    table = format_table(search(SearchConfig(index=str(index), k=5, object_id=query)))
    print(table)
    return embeddings, index, table


def retrieval(config: QuickstartConfig, embeddings: Path) -> dict[str, Any]:
    from astrofm.retrieval_report import RetrievalReportConfig, write_report

    out = write_report(RetrievalReportConfig(embeddings=str(embeddings), out=str(config.root / "retrieval")))
    return _read_json(out / "metrics.json")


def regression(config: QuickstartConfig, embeddings: Path) -> dict[str, Any]:
    """Redshift, stellar mass and specific star formation rate from spectrum and image embeddings (each
    label on its own, as AstroCLIP reports them): kNN and the MLP probe, 10% and all labels, with the
    intervals' coverage in bins of r magnitude (the mock has it: bright and faint galaxies alike?)."""
    from downstream.regression import RegressionConfig, write_report

    out = write_report(RegressionConfig(embeddings=str(embeddings), out=str(config.root / "regression"),
                                        targets=list(REGRESSION_TARGETS), modalities=["spectrum", "image"],
                                        methods=["knn", "mlp"], label_fractions=[0.1, 1.0], seeds=1,
                                        coverage_by="mag_r"))
    return _read_json(out / "metrics.json")


def misspecification(config: QuickstartConfig, model: Path, observed: Path,
                     simulated: dict[str, Path]) -> dict[str, Any]:
    from downstream.misspec import MisspecConfig, write_report

    out = write_report(MisspecConfig(model=str(model), observed=str(observed),
                                     simulated={name: str(path) for name, path in simulated.items()},
                                     out=str(config.root / "misspec"), seed=config.seed))
    return _read_json(out / "metrics.json")


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# The summary: a table for the terminal, summary.json and report.md.
# ---------------------------------------------------------------------------------------------


def headline(retrieval_metrics: dict[str, Any], regression_metrics: dict[str, Any],
             misspec_metrics: dict[str, Any], extent: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, quantity, value) rows: the numbers a reader looks at first."""
    from pretrain.export import epochs_text

    cap = f", {extent['max_minutes']:g}-minute cap" if extent["max_minutes"] else ""
    epochs = epochs_text(extent["epochs_trained"], extent["epoch_cut_short"])
    rows = [("pretraining", "epochs trained (steps)",
             f"{epochs} of at most {extent['max_epochs']} ({extent['global_step']} steps{cap})")]
    for pair, entry in retrieval_metrics["pairs"].items():
        rows.append(("retrieval (test)", f"{pair} top-10 of {entry['pool']}",
                     f"{entry['top10']:.3f} (chance {10 / max(entry['pool'], 1):.3f})"))
    for entry in regression_metrics["summary"]:
        if entry["target"] != REGRESSION_TARGETS[0] and entry["label_fraction"] != 1.0:
            continue  # the few-label rows of redshift alone, so the table stays short
        mean = entry["mean"]
        rows.append((f"{entry['target']} (test)",
                     f"{entry['modality']} {entry['method']}, {entry['label_fraction']:g} of labels",
                     f"R2 {mean['r2']:.3f}, NMAD {mean['nmad']:.4f}, cov68 {mean['coverage_68']:.2f}"))
    for name, entry in misspec_metrics["suites"].items():
        rows.append(("misspecification", f"{name} vs observed",
                     f"AUC {entry['auc']:.3f} (p {entry['p_value']:.3f}), P(model) {entry['model_probability']:.3f}"))
    rows.append(("misspecification", "observed objects no suite covers",
                 f"{misspec_metrics['uncovered_fraction']:.3f}"))
    return rows


def format_headline(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)


def write_markdown(config: QuickstartConfig, rows: list[tuple[str, str, str]], search_table: str,
                   timings: dict[str, float]) -> Path:
    """DIR/report.md: the headline table, the demo search, and every report's plots (relative links)."""
    root = config.root
    lines = ["# astrofm quickstart", "",
             f"Mock universe: {config.n} observed objects; simulated suites "
             f"{', '.join(config.suite_seeds())} with {config.n_simulated} objects each. Model: "
             f"`{Path(config.recipe).stem}` pretrained on the observed train split. Every number below is on "
             "objects the model and the probes did not fit.", "",
             "| section | quantity | value |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "## Similarity search", "", "```", search_table, "```", ""]
    for section, title in (("retrieval", "Cross-modal retrieval"), ("regression", "Redshift regression"),
                           ("misspec", "Simulation against observation")):
        folder = root / section
        lines += [f"## {title}", ""]
        if (folder / "report.md").is_file():
            lines += [f"Full report: [{section}/report.md]({section}/report.md)", ""]
        lines += [f"![{png.stem}]({section}/{png.name})" for png in sorted(folder.glob("*.png"))]
        lines.append("")
    lines += ["## Wall time", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

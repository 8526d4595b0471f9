"""Regression on frozen embeddings: kNN, ridge and MLP probes, split-conformal intervals, a report.

    from downstream.regression import RegressionConfig, write_report
    write_report(RegressionConfig(embeddings="EMB_DIR", modalities=["spectrum"],
                                  targets=["redshift", "log_stellar_mass"], out="REPORT"))
"""

from downstream.regression.report import RegressionConfig, compute, write_report

__all__ = ["RegressionConfig", "compute", "write_report"]

"""Cross-modal generation from frozen embeddings: a decoder, a kNN and a raw-source baseline, a report.

    from downstream.generation import GenerateConfig, write_report
    write_report(GenerateConfig(model="MODEL", data="DATA", source="photometry", target="spectrum", out="REPORT"))
"""

from downstream.generation.report import GenerateConfig, compute, evaluate, write_report

__all__ = ["GenerateConfig", "compute", "evaluate", "write_report"]

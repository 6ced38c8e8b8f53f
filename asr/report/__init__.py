"""Experiment reporting: score every decoded system of an experiment directory and write
``report.md`` (headline and full tables with intervals and significance, PER per speaker
condition and the robustness test, dev/test gap, phone confusions, training curves,
provenance); ``write_comparison`` puts several experiment directories side by side."""
from asr.report.compare import write_comparison
from asr.report.markdown import relative_gains, write_report
from asr.report.provenance import write_run_info
from asr.report.systems import collect_systems

__all__ = ["collect_systems", "relative_gains", "write_comparison", "write_report", "write_run_info"]

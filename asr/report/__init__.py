"""Experiment reporting: score every decoded system of an experiment directory and write
``report.md`` with the comparison table, intervals, significance and plots."""
from asr.report.markdown import relative_gains, write_report
from asr.report.systems import collect_systems

__all__ = ["collect_systems", "relative_gains", "write_report"]

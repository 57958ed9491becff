"""Reports of a run: figures and a self-contained HTML page, read from its results.

A run's results are its summary (the ``summary.json`` object) and, with VMs,
its time series (one row per VM per reclamation step). A report only reads
them — it never reaches into the simulation — so the same functions draw a run
just finished and one loaded back from its files.

- :func:`write_figures` draws the figures (:mod:`memvirt.report.figures`) as
  SVG and PNG files.
- :func:`write_report` writes ``report.html`` (:mod:`memvirt.report.html`): the
  tables and the figures in one file that needs nothing else to be read — no
  network, no scripts, the figures inlined as SVG — so it can be mailed,
  archived or opened years later.
"""

from memvirt.report.figures import write_figures
from memvirt.report.html import render_report, write_report

__all__ = ["render_report", "write_figures", "write_report"]

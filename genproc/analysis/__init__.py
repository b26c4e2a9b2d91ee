"""Analyses of trained runs (the paper's Sec. 3.3, 4 and App. C–D), pure library code: each module returns data
(``compute_*``), draws figures (``plot_*``) and writes PNG + JSON (``analyze_<what>(runs, out, ...)``); the
``genproc analyze <what>`` commands that call them live in :mod:`genproc.cli_analyze`. See
:mod:`genproc.analysis.common` for the shape."""

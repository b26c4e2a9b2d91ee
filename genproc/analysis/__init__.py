"""Analyses of trained runs (the paper's Sec. 3.3, 4 and App. C–D): each module returns data, draws a
figure and backs one ``genproc analyze <what>`` command. See :mod:`genproc.analysis.common` for the shape."""

"""What a place on disk is, as the project's commands see it. Plain Python (no torch), so the
training side and `reports` decide alike.

    NOT_RUNS    names under a runs directory that are never runs: base (the base encoder's
                name on the command line), analyses (results), data, report, study
"""

from __future__ import annotations

NOT_RUNS = frozenset({"analyses", "base", "data", "report", "study"})

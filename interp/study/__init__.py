"""`interp study`: a named grid of presets x seeds, trained resumably, tabulated like the study's tables.

    grids.toml   the grids, their tables (rows = presets, in the thesis's order) and the scales
    grid.py      reading grids.toml; seeds; run names (<preset>-s<seed>)
    runner.py    planning against what is on disk (skip / resume / train / refuse), training
    tables.py    mean and sample std over seeds; tables.json and tables.md
"""

from interp.study.grid import GRIDS_FILE, STUDY_SEEDS, Grid, Scale, Table, get_grid, get_scale, load_grid_file, parse_seeds, run_name
from interp.study.runner import RunOutcome, StudyResult, run_study
from interp.study.tables import render_markdown, table_row

__all__ = [
    "GRIDS_FILE", "STUDY_SEEDS", "Grid", "RunOutcome", "Scale", "StudyResult", "Table", "get_grid", "get_scale",
    "load_grid_file", "parse_seeds", "render_markdown", "run_name", "run_study", "table_row",
]

"""One writer of a report site at a time, and a site swap cut short is finished or undone first.

`interp report` holds a lock beside OUT (`.NAME.lock`, trainers/locks.py) while it builds: a second
build of the same site is refused with one error line naming the holder, and the site is left as
it was. A build killed between the two renames of its swap (records.io.atomic_dir) leaves the
old site in `.NAME.XXXXXXXX.old/`: the next build puts it back before it replaces it, so nothing is
left beside OUT. No model: the runs are the hand-written ones of tests/helpers.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpers import check_refused, invoke, snapshot
from records.io import leftovers
from trainers.locks import hold


def test_a_second_build_of_one_site_is_refused_naming_the_first(cli_world, tmp_path):
    runs, site = tmp_path / "runs", tmp_path / "site"
    shutil.copytree(cli_world.runs, runs)
    assert invoke(["report", "--runs-dir", runs, "--out", site]).exit_code == 0
    before = snapshot(site)
    with hold(tmp_path / ".site.lock", "the report"):  # as a build in another process holds it
        line = check_refused(["report", "--runs-dir", runs, "--out", site], ["report", "in use by", f"pid {os.getpid()}"],
                             watched=site)
    assert "--wait" in line
    assert snapshot(site) == before
    assert invoke(["report", "--runs-dir", runs, "--out", site]).exit_code == 0  # free again once the holder is done
    assert not (tmp_path / ".site.lock").exists()


def test_a_swap_cut_short_is_undone_before_the_next_build(cli_world, tmp_path):
    runs, site = tmp_path / "runs", tmp_path / "site"
    shutil.copytree(cli_world.runs, runs)
    assert invoke(["report", "--runs-dir", runs, "--out", site]).exit_code == 0
    old = tmp_path / ".site.k2j4x9q1.old"  # killed after the first rename: the old site moved aside, the new one not in place
    old.mkdir()
    os.replace(site, old / "site")
    (tmp_path / ".site.m3n8b2v7.tmp").mkdir()  # the new one, half written
    assert invoke(["report", "--runs-dir", runs, "--out", site]).exit_code == 0
    assert (site / "index.html").is_file() and leftovers(site) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "site"]

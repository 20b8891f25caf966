"""`interp runs`: list the runs with their method, trainable parameters, pooling, tie rule and MRRs."""

from __future__ import annotations

from pathlib import Path

import typer

from interp.commands import options


RUNS_TEST_COLUMNS = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1"}  # the test split's, beside its MRR


def runs(runs_dir: options.RunsDir = Path("runs")) -> None:
    """List the runs: method, trainable parameters, share of base, pooling, tie rule, valid and test MRR, and the test
    split's MRR@10, NDCG@10 and Recall@1 ('-' for runs that predate them)."""
    from records.errors import InterpError
    from trainers.training.runs import scan_runs

    options.existing_dir("--runs-dir", runs_dir)
    rows = [("run", "preset", "method", "trainable", "share", "pooling", "ties", "valid MRR", "test MRR", *RUNS_TEST_COLUMNS.values(),
             "status")]
    found, damaged = scan_runs(runs_dir)
    for exc in damaged:  # listed, not fatal: the other runs are still shown (exit status 0)
        typer.echo(f"warning: skipped a damaged run: {exc}", err=True)
    for run in found:
        m, p = run.manifest, run.manifest.get("parameters", {})
        metrics = m.get("metrics", {})
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        try:
            cfg = run.train_config
            pooling, tie_rule = cfg.pooling, cfg.ties
        except (InterpError, KeyError, TypeError):  # a manifest without a readable "train" section
            pooling = tie_rule = "?"
        test = run.manifest.split_metrics("test", run.path)
        rows.append((run.name, m.get("preset") or "-", m["method"]["method"], f"{p.get('trainable', 0):,}",
                     f"{100 * p.get('share_of_base', 0):.2f}%", pooling, tie_rule, fmt(metrics.get("valid_mrr")),
                     fmt(metrics.get("test_mrr")), *(fmt(test.get(key)) for key in RUNS_TEST_COLUMNS), m.get("status", "?")))
    if len(rows) == 1:
        typer.echo(f"no runs in {runs_dir}" + (f" that can be read ({len(damaged)} damaged)" if damaged else ""))
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())

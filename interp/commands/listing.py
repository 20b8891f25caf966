"""`interp runs`: list the runs with their method, trainable parameters, pooling, tie rule and MRRs.

Beside the trained runs: the untrained base as a zero-shot row where `interp eval base` saved its metrics
(RUNS_DIR/analyses/eval/base-<label>.json: `base` takes the test and valid files' MRRs, any other label, a --data
file's stem, a row `base:<label>` with its metrics in the test columns, as the report shows them), and imported
deltas (`interp import`) marked "imported" in the preset column.
"""

from __future__ import annotations

from pathlib import Path

import typer

from interp.commands import options


RUNS_TEST_COLUMNS = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1"}  # the test split's, beside its MRR
ZERO_SHOT = Path("analyses") / "eval"  # where `interp eval base` saves base-<label>.json (interp.commands.evaluation)
IMPORTED = "imported"  # the preset column of a run `interp import` registered


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def zero_shot_rows(runs_dir: Path) -> tuple[list[tuple], list[str]]:
    """The base's rows (columns as `runs`'s) from RUNS_DIR/analyses/eval/base-*.json, and a warning per unreadable file."""
    from records.places import read_json

    saved, warnings = {}, []
    for path in sorted((Path(runs_dir) / ZERO_SHOT).glob("base-*.json")):
        data = read_json(path)
        metrics = data.get("metrics") if isinstance(data, dict) else None
        if not (isinstance(data, dict) and data.get("kind") == "eval" and isinstance(metrics, dict)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())):
            warnings.append(f"{path}: not an `interp eval base` result (kind 'eval', metrics of numbers)")
            continue
        saved[path.stem.removeprefix("base-")] = data
    test, valid = saved.pop("test", None), saved.pop("valid", None)
    rows = [_base_row("base", test, valid)] if test is not None or valid is not None else []
    return rows + [_base_row(f"base:{label}", data, None) for label, data in saved.items()], warnings


def _base_row(name: str, shown: dict | None, valid: dict | None) -> tuple:
    """One zero-shot row: `shown`'s metrics in the test columns, `valid`'s MRR in the valid one."""
    first = shown or valid
    metrics = shown["metrics"] if shown is not None else {}
    valid_mrr = _float(valid["metrics"].get("mrr")) if valid is not None else None
    return (name, "zero-shot", "(untrained)", "0", "0.00%", str(first.get("pooling", "?")), str(first.get("ties", "?")),
            _fmt(valid_mrr), _fmt(_float(metrics.get("mrr"))), *(_fmt(_float(metrics.get(key))) for key in RUNS_TEST_COLUMNS),
            "scored")


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def runs(runs_dir: options.RunsDir = Path("runs")) -> None:
    """List the runs: method, trainable parameters, share of base, pooling, tie rule, valid and test MRR, and the test
    split's MRR@10, NDCG@10 and Recall@1 ('-' for runs that predate them). The base is a zero-shot row once
    `interp eval base` has scored it; imported deltas say "imported" where a trained run names its preset."""
    from records.errors import InterpError
    from trainers.training.runs import scan_runs

    options.existing_dir("--runs-dir", runs_dir)
    rows = [("run", "preset", "method", "trainable", "share", "pooling", "ties", "valid MRR", "test MRR", *RUNS_TEST_COLUMNS.values(),
             "status")]
    found, damaged = scan_runs(runs_dir)
    for exc in damaged:  # listed, not fatal: the other runs are still shown (exit status 0)
        typer.echo(f"warning: skipped a damaged run: {exc}", err=True)
    base_rows, unreadable = zero_shot_rows(runs_dir)
    for warning in unreadable:
        typer.echo(f"warning: skipped {warning}", err=True)
    rows += base_rows
    for run in found:
        m, p = run.manifest, run.manifest.get("parameters", {})
        metrics = m.get("metrics", {})
        try:
            cfg = run.train_config
            pooling, tie_rule = cfg.pooling, cfg.ties
        except (InterpError, KeyError, TypeError):  # a manifest without a readable "train" section
            pooling = tie_rule = "?"
        test = run.manifest.split_metrics("test", run.path)
        preset = m.get("preset") or (IMPORTED if run.source is not None else "-")
        rows.append((run.name, preset, m["method"]["method"], f"{p.get('trainable', 0):,}",
                     f"{100 * p.get('share_of_base', 0):.2f}%", pooling, tie_rule, _fmt(metrics.get("valid_mrr")),
                     _fmt(metrics.get("test_mrr")), *(_fmt(test.get(key)) for key in RUNS_TEST_COLUMNS), m.get("status", "?")))
    if len(rows) == 1:
        typer.echo(f"no runs in {runs_dir}" + (f" that can be read ({len(damaged)} damaged)" if damaged else ""))
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())

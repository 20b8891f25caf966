"""`interp qualitative` and `interp compare`: which queries each delta gets right, and whether
one delta is really better than another. Thin: parse, call the library, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options

Split, DataFile, Limit = options.Split, options.ScoredDataFile, options.Limit


def _names(value: str | None) -> list[str]:
    """'a, b' -> ['a', 'b']; an empty name stays, for the library to refuse ('a,,b')."""
    return [n.strip() for n in value.split(",")] if value else []


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _p(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def qualitative(
    runs: Annotated[str | None, typer.Option("--runs", help="Comma-separated runs for easy/hard (default: baseline and candidate).")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="For fixed/regressed: the run to improve on (the study's LoRA-256).")] = None,
    candidate: Annotated[str | None, typer.Option("--candidate", help="For fixed/regressed: the run that should fix it (the study's loFF).")] = None,
    split: Split = "test",
    data: DataFile = None,
    limit: Limit = None,
    samples: Annotated[int, typer.Option("--samples", help="Example queries shown per set (a fixed choice).")] = 3,
    runs_dir: options.RunsDir = Path("runs"),
    precision: options.Precision = "fp32",
    progress: options.Progress = True,
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
    num_processes: options.NumProcesses = None,
) -> None:
    """Easy / hard examples (gold ranked first by all runs / by none), and for a baseline-candidate
    pair the fixed, regressed, both-correct and both-wrong ones: counts, token statistics of query
    and code (length, unique and repeated tokens), Mann-Whitney U tests between sets (stochastic
    dominance, not a difference of means), samples."""
    from interp.analyses.qualitative import ATTRIBUTES, Qualitative
    from interp.commands.launching import run_analysis_on

    ran = run_analysis_on(num_processes, Qualitative, command="qualitative", runs_dir=runs_dir, runs=_names(runs),
                          baseline=baseline, candidate=candidate, split=split, data_file=data, limit=limit, samples=samples,
                          progress=progress, precision=precision, foreign=options.foreign(base, pooling, max_len))
    if ran is None:  # launched processes ran it
        return
    result, path = ran
    typer.echo(f"{result.examples} examples; correct = gold code ranked first (ranks under the {result.ties!r} tie rule)")
    for name, c in result.per_run.items():
        typer.echo(f"  {name}: {c.correct} correct, {c.wrong} wrong, MRR {c.mrr:.4f}")
    typer.echo("set            count  " + "  ".join(f"{a:>15}" for a in ATTRIBUTES) + "   (mean / median)")
    for s in result.sets:
        cells = "  ".join(f"{_num(s.stats[a].mean, '.1f'):>7}/{_num(s.stats[a].median, '.0f'):<7}" for a in ATTRIBUTES)
        typer.echo(f"{s.name:<13} {s.count:>6}  {cells}")
    typer.echo("Mann-Whitney U p, unadjusted: do one set's values tend to exceed the other's (null: P(a > b) + P(a = b) / 2 = 1/2)?")
    typer.echo("Not a test of the means or medians above. Holm-adjusted p, that probability and the rank-biserial effect in the JSON:")
    pairs = dict.fromkeys((t.a, t.b) for t in result.tests)
    for a, b in pairs:
        cells = ", ".join(f"{t.attribute} {_p(t.test.p)}" for t in result.tests if (t.a, t.b) == (a, b))
        typer.echo(f"  {a} vs {b}: {cells}")
    typer.echo(f"-> {path}")


def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (or 'base'); seeds of one preset are pooled.")],
    split: Split = "test",
    data: DataFile = None,
    limit: Limit = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% interval of the MRR difference.")] = 10_000,
    permutations: Annotated[int, typer.Option(
        "--permutations", help="Random sign patterns (or relabellings of pooled seeds) of the randomisation test; "
                               "enumerated exactly when there are at most this many.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap and of a Monte Carlo randomisation test.")] = 0,
    runs_dir: options.RunsDir = Path("runs"),
    precision: options.Precision = "fp32",
    progress: options.Progress = True,
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
    num_processes: options.NumProcesses = None,
) -> None:
    """MRR of each run (mean and std over seeds of one preset), and for each pair the MRR difference
    (second minus first) with a randomisation test of that mean (paired sign flips over queries; a
    relabelling of the runs when a side pools seeds), a 95% interval (BCa bootstrap over queries;
    hierarchical over seeds and queries when a side pools seeds) and, secondary, a Wilcoxon
    signed-rank p (a median shift, not the mean)."""
    from interp.analyses.compare import Compare
    from interp.commands.launching import run_analysis_on

    ran = run_analysis_on(num_processes, Compare, command="compare", runs_dir=runs_dir, names=runs, split=split,
                          data_file=data, limit=limit, bootstrap=bootstrap, permutations=permutations, seed=seed, progress=progress,
                          precision=precision, foreign=options.foreign(base, pooling, max_len))
    if ran is None:  # launched processes ran it
        return
    result, path = ran
    typer.echo(f"{result.examples} queries; ranks under the {result.ties!r} tie rule")
    for g in result.groups:
        spread = f" ± {g.mrr_std:.4f} over {len(g.runs)} seeds" if g.mrr_std is not None else ""
        typer.echo(f"  {g.name}: MRR {g.mrr:.4f}{spread}, top-1 {100 * g.top1:.1f}%")
    for p in result.pairs:
        t, ci = p.test, p.ci
        kind, units = ("sign-flip over queries", "sign patterns") if t.test == "sign-flip" else ("relabelling of seeds", "splits of the runs")
        drawn = f"exact over {t.resamples:,} {units}" if t.exact else f"{t.resamples:,} random {units}, seed {t.seed}"
        floor = f", smallest possible p {_p(t.min_p)}" if t.min_p >= 0.05 else ""
        interval = "BCa over queries" if ci.method == "bca" else ("seeds and queries" if ci.method == "hierarchical-percentile" else ci.method)
        typer.echo(f"  {p.b} - {p.a}: MRR {p.difference:+.4f}, {100 * ci.level:.0f}% CI [{ci.low:+.4f}, {ci.high:+.4f}] ({interval}); "
                   f"p = {_p(t.p)} ({kind}, {drawn}{floor}; Holm {_p(p.p_holm)})")
        if p.query_ci is not None:
            typer.echo(f"      queries only (seeds fixed): CI [{p.query_ci.low:+.4f}, {p.query_ci.high:+.4f}]")
        median = "identical" if p.wilcoxon.identical else f"p = {_p(p.wilcoxon.p)}"
        typer.echo(f"      median shift (Wilcoxon signed-rank, not the mean): {median}; "
                   f"better on {p.b_better} / {p.a_better} queries, same on {p.same}")
    if result.base is not None:
        typer.echo(f"  base scored at max_len {result.base.max_len}, {result.base.pooling} pooling (as the runs)")
    typer.echo(f"-> {path}")

"""The study's tables from finished runs: mean and sample std over seeds, as JSON and Markdown.

One row per preset: its trainable parameters and share of the base, and over the finished
runs of its seeds the valid MRR, test MRR (fractions, as in the manifests) and best step, and
under "test" the test split's MRR@10, NDCG@10 and Recall@1/5/10 (`TEST_METRICS`; no mean unless
every finished seed recorded it: runs from before they were recorded have only the MRR).
`std` is the sample standard deviation (ddof=1), None below two runs; `mean` is None with
none. The data fingerprint is the sha256 of the three split fingerprints the runs used, so
it names both the files and the samples drawn from them.

Beside the grid ("beside"): rows for what is not a preset of it but is scored on the same kind of
data, from the same runs directory: the untrained base (`interp eval base`'s runs_dir/analyses/eval/
base-test.json, the zero-shot row) and every imported delta (`interp import`) whose test metrics
`interp eval NAME` recorded. Each says whether its test examples are the grid's (`same_test`: the
same test fingerprint, file and sample) and whether its base is the grid's (`same_base`); only
such rows compare with the grid's numbers, and the Markdown says so on every row. Imported runs
not yet scored are listed under "unscored", with the command that scores them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from interp.study.grid import Grid, Scale, run_name
from records.manifest import MANIFEST, Manifest
from records.summaries import summarize


def table_row(preset: str, method: str, parameters: dict, manifests: dict[str, Manifest | None],
              run_dirs: dict[str, Path] | None = None) -> dict:
    """One row from the manifests of a preset's runs (name -> manifest, None when absent), in seed order; `run_dirs`
    (name -> directory) lets an older run's ranks.json give its test metrics."""
    run_dirs = run_dirs or {}
    done = {name: m for name, m in manifests.items() if m is not None and m.finished}
    metric = lambda key: [m.metrics[key] for m in done.values()]  # noqa: E731
    steps = summarize(metric("best_step")).mean_std()
    return {
        "preset": preset,
        "method": method,
        "trainable": parameters.get("trainable"),
        "share_of_base": parameters.get("share_of_base"),
        "valid_mrr": summarize(metric("valid_mrr")).mean_std(),
        "test_mrr": summarize(metric("test_mrr")).mean_std(),
        "best_step": {"mean": steps["mean"], "n": steps["n"]},
        "test": {key: _every([(run_dirs.get(name), m) for name, m in done.items()], key) for key in TEST_METRICS},
        "runs": list(done),
        "missing": [name for name in manifests if name not in done],
    }


TEST_METRICS = ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10")  # beside the test MRR (`trainers.training.metrics`)
SHOWN = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1"}  # of them, the Markdown table's columns


def _every(manifests, key: str) -> dict:  # manifests: (run directory or None, Manifest) pairs
    """mean_std of the test split's `key`; no mean unless every run recorded it (runs that predate it did not)."""
    values = [m.split_metrics("test", path).get(key) for path, m in manifests]
    return summarize([] if None in values else values).mean_std()


def data_fingerprint(data: dict) -> str:
    digest = hashlib.sha256()
    for split in sorted(data):
        digest.update(f"{split}:{data[split]['fingerprint']}\n".encode())
    return digest.hexdigest()


def build_tables(*, grid: Grid, seeds: tuple[int, ...], scale: Scale, runs_dir: Path, data_dir: Path, expected) -> dict:
    """The tables document of a study (see the module docstring); reads runs_dir/<preset>-s<seed>/manifest.json."""
    from trainers import methods
    from trainers.training.runs import code_version, package_versions

    manifests = {}
    for preset in grid.presets:
        for seed in seeds:
            path = runs_dir / run_name(preset, seed)
            manifests[run_name(preset, seed)] = Manifest.read(path) if (path / MANIFEST).is_file() else None
    first = next((m for m in manifests.values() if m is not None and m.finished), None)
    tables = []
    for table in grid.tables:
        rows = [
            table_row(preset, methods.get_preset(preset).method, expected.parameters[preset],
                      {run_name(preset, s): manifests[run_name(preset, s)] for s in seeds},
                      {run_name(preset, s): runs_dir / run_name(preset, s) for s in seeds})
            for preset in table.presets
        ]
        tables.append({"table": table.id, "title": table.title, "rows": rows})
    train = {k: v for k, v in asdict(scale.config(seeds[0])).items() if k != "seed"}
    return {
        "kind": "study",
        "grid": grid.name,
        "scale": scale.name,
        "seeds": list(seeds),
        "base": first.base if first else expected.base,
        "data": {"dir": str(Path(data_dir).resolve()), "fingerprint": data_fingerprint(expected.data)},
        "train": train,
        "tables": tables,
        **beside_grid(runs_dir, expected),
        "code_version": code_version(),
        "versions": package_versions(),
    }


ZERO_SHOT = Path("analyses") / "eval" / "base-test.json"  # `interp eval base` on the test split, under a runs directory


def _number(value):
    """`value` where it is a number (JSON's), else None: what a hand-edited result holds is shown as missing, not failed on."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def beside_grid(runs_dir: Path, expected) -> dict:
    """{"beside": rows of the zero-shot base and the scored imported runs, "unscored": imported runs without test metrics}
    (module docstring); `expected` (runner.Expected) gives the grid's base weights and test examples."""
    from records.places import read_json
    from trainers.training.runs import list_runs

    test_fp, base_sha = (expected.data.get("test") or {}).get("fingerprint"), expected.base.get("weights_sha256")
    rows, unscored = [], []
    saved = read_json(Path(runs_dir) / ZERO_SHOT)
    if isinstance(saved, dict) and isinstance(saved.get("metrics"), dict) and _number(saved["metrics"].get("mrr")) is not None:
        rows.append({"name": "base", "kind": "zero-shot", "method": "untrained base", "trainable": 0, "share_of_base": 0.0,
                     "valid_mrr": None, "test_mrr": saved["metrics"]["mrr"], "test": {k: _number(saved["metrics"].get(k)) for k in TEST_METRICS},
                     "test_pairs": _number(saved.get("queries")), "same_test": saved.get("fingerprint") == test_fp is not None,
                     "same_base": isinstance(saved.get("base"), dict) and saved["base"].get("weights_sha256") == base_sha})
    for run in list_runs(Path(runs_dir)):
        if run.source is None:
            continue
        m, test = run.manifest, run.manifest.split_metrics("test")
        if "mrr" not in test:
            unscored.append(run.name)
            continue
        rows.append({"name": run.name, "kind": "imported", "method": m.parameters.get("method"), "trainable": m.parameters.get("trainable"),
                     "share_of_base": m.parameters.get("share_of_base"), "valid_mrr": m.split_metrics("valid").get("mrr"),
                     "test_mrr": test["mrr"], "test": {k: test.get(k) for k in TEST_METRICS},
                     "test_pairs": (m.data.get("test") or {}).get("used"), "same_test": m.fingerprints.get("test") == test_fp is not None,
                     "same_base": m.weights_sha256 == base_sha})
    return {"beside": rows, "unscored": unscored}


def write_tables(doc: dict, out_dir: Path) -> tuple[Path, Path]:
    """tables.json and tables.md in out_dir, each written atomically."""
    from records.io import write_json, write_text

    write_json(out_dir / "tables.json", doc)
    write_text(out_dir / "tables.md", render_markdown(doc))
    return out_dir / "tables.json", out_dir / "tables.md"


NONE = {"mean": None, "std": None, "n": 0}


def percent(summary: dict) -> str:
    """'39.19 ± 0.55' (percent, 2 decimals); no std below two runs; '-' with none."""
    if summary["mean"] is None:
        return "-"
    text = f"{100 * summary['mean']:.2f}"
    return text if summary["std"] is None else f"{text} ± {100 * summary['std']:.2f}"


def render_markdown(doc: dict) -> str:
    train = doc["train"]
    lines = [
        f"# Study: grid {doc['grid']}, scale {doc['scale']}",
        "",
        f"Base {doc['base']['name']} (weights {doc['base']['weights_sha256'][:12]}); data {doc['data']['dir']} "
        f"(fingerprint {doc['data']['fingerprint'][:12]}); seeds {', '.join(map(str, doc['seeds']))}.",
        "Training: " + ", ".join(f"{k} {v}" for k, v in train.items()) + ".",
        "MRR in percent: mean ± sample std over the finished seeds (n); the delta with the best valid MRR is tested.",
    ]
    for table in doc["tables"]:
        label = _label(table["table"])
        lines += ["", f"## {label}: {table['title']}", "",
                  "| Model | Method | #Parameters | Valid MRR (%) | Test MRR (%) | " + "".join(f"Test {v} (%) | " for v in SHOWN.values())
                  + "Best step | n | Missing |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(SHOWN) + "---:|---:|---|"]
        for row in table["rows"]:
            params = "-" if row["trainable"] is None else f"{row['trainable']:,} ({100 * row['share_of_base']:.2f}%)"
            step = "-" if row["best_step"]["mean"] is None else f"{row['best_step']['mean']:g}"
            missing = ", ".join(row["missing"]) or "-"
            shown = "".join(f"{percent(row.get('test', {}).get(key, NONE))} | " for key in SHOWN)  # older tables.json: none
            lines.append(f"| {row['preset']} | {row['method']} | {params} | {percent(row['valid_mrr'])} | "
                         f"{percent(row['test_mrr'])} | {shown}{step} | {row['test_mrr']['n']} | {missing} |")
    lines += _beside_markdown(doc)
    return "\n".join(lines) + "\n"


def _fraction(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _beside_markdown(doc: dict) -> list[str]:
    """The rows beside the grid (`beside_grid`; none in tables.json written before them)."""
    rows, unscored = doc.get("beside") or [], doc.get("unscored") or []
    if not rows and not unscored:
        return []
    lines = ["", "## Beside the grid: the base (zero-shot) and imported deltas", "",
             "One run each, not presets of the grid; comparable with its tables only where the test examples and the base are the grid's."]
    if rows:
        lines += ["", "| Run | Kind | Method | #Parameters | Valid MRR (%) | Test MRR (%) | " + "".join(f"Test {v} (%) | " for v in SHOWN.values())
                  + "Test examples |", "|---|---|---|---:|---:|---:|" + "---:|" * len(SHOWN) + "---|"]
        for row in rows:
            params = "-" if row["trainable"] is None else f"{row['trainable']:,} ({100 * (row['share_of_base'] or 0):.2f}%)"
            where = ("the grid's" if row["same_test"] else f"other ({row['test_pairs'] if row['test_pairs'] is not None else '?'} pairs)") + (
                "" if row["same_base"] else "; another base")
            shown = "".join(f"{_fraction(row['test'].get(key))} | " for key in SHOWN)
            lines.append(f"| {row['name']} | {row['kind']} | {row['method']} | {params} | {_fraction(row['valid_mrr'])} | "
                         f"{_fraction(row['test_mrr'])} | {shown}{where} |")
    if unscored:
        lines += ["", "Imported, not scored yet (`interp eval NAME`): " + ", ".join(unscored) + "."]
    return lines



def _label(table_id: str) -> str:
    """'4.6' -> 'Table 4.6', 'fig4.4' -> 'Fig. 4.4', 'ordering' -> 'Ordering'."""
    if table_id[:1].isdigit():
        return f"Table {table_id}"
    if table_id.startswith("fig"):
        return f"Fig. {table_id[3:]}"
    return table_id.capitalize()

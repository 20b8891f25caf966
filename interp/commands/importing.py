"""`interp import PATH --name NAME`: register a delta from anywhere (a peft adapter, a fully fine-tuned
model directory) as a run, so `interp runs`, the study tables, the report and every analysis see it.
Thin: parse, call `trainers.training.runs.import_run`, print what was assumed.

Mounted by the CLI as `app.command("import")(importing.import_)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options


def import_(
    path: Annotated[Path, typer.Argument(parser=options._path, help="A peft adapter directory (adapter_config.json + "
                                         "adapter_model.safetensors) or a Hugging Face model directory (a fully fine-tuned encoder).")],
    name: Annotated[str, typer.Option("--name", help="The run's name under RUNS_DIR (letters, digits, . _ + -).")],
    base: Annotated[str | None, typer.Option("--base", help="The base encoder it was trained from: a local directory or a cached "
                                             "hub id. Default: the adapter's base_model_name_or_path; a model directory needs it.")] = None,
    pooling: Annotated[str | None, typer.Option("--pooling", callback=options.choice,
                                                help="How it embeds a sequence: cls (default), pooler or mean.")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", help="Tokens per query or code (default 256).")] = None,
    data: Annotated[Path | None, typer.Option("--data", parser=options._path,
                                              help="The AdvTest directory analyses read by default (default RUNS_DIR/data).")] = None,
    copy: Annotated[bool, typer.Option("--copy/--no-copy", help="Copy the weights into the run (default: referenced where they are).")] = False,
    score: Annotated[bool, typer.Option("--eval/--no-eval", help="Then score it on its valid and test splits and record the "
                                        "metrics (as `interp eval NAME --split valid|test` does).")] = False,
    progress: options.Progress = True,
    runs_dir: options.RunsDir = Path("runs"),
) -> None:
    """Register a peft adapter or a fine-tuned model directory as a run, its weights referenced (or --copy); --eval scores it."""
    from trainers.foreign import ForeignOptions
    from trainers.training.runs import import_run

    options.creatable_dir("--runs-dir", runs_dir)
    options.at_least("--max-len", max_len)
    run = import_run(path, name=name, runs_dir=runs_dir, copy=copy,
                       options=ForeignOptions(base=base, pooling=pooling, max_len=max_len, data_dir=data))
    m, source = run.manifest, run.source
    typer.echo(f"imported {run.name}: {m.parameters['method']} ({m.parameters['trainable']:,} parameters, "
               f"{100 * m.parameters['share_of_base']:.2f}% of the base)")
    typer.echo(f"  base {m.base['source']} ({m.weights_sha256[:12]}; from {source['base_from']}); pooling {source['pooling']}, "
               f"max_len {source['max_len']}, data {source['data_dir']}")
    typer.echo(f"  weights {'copied into ' + str(run.path) if copy else 'referenced at ' + source['path']}; manifest {run.path / 'manifest.json'}")
    if source.get("pooling_from"):
        typer.echo(f"  pooling {source['pooling']} as its sentence-transformers {source['pooling_from']} says")
    if source.get("ignored"):
        shown = ", ".join(source["ignored"][:4]) + (f" and {len(source['ignored']) - 4} more" if len(source["ignored"]) > 4 else "")
        typer.echo(f"  a task head's keys left out (the encoder under it is the delta): {shown}")
    if score:
        scored = _score(run, progress=progress)
        for split, result, note in scored:
            typer.echo(f"  {split}: MRR {result.evaluation.mrr:.4f} over {len(result.urls)} queries (ties {result.ties}; pooling "
                       f"{result.pooling}); {note}")
        if not scored:
            typer.echo(f"  not scored: no valid or test split in {source['data_dir']}")


def _score(run, *, progress: bool) -> list[tuple[str, object, str]]:
    """--eval: the imported run scored on its own valid and test splits (those fingerprinted at import), each recorded as
    `interp eval NAME --split S` records it (`record_evaluation`): (split, `RunEvaluation`, what was recorded), valid first."""
    from trainers.training.runs import record_evaluation
    from trainers.training.scoring import evaluate_run

    out = []
    for split in ("valid", "test"):
        if (run.manifest.data.get(split) or {}).get("fingerprint") is None:
            continue  # no such split in its data directory (or not readable) when it was imported
        precision = run.manifest.train.get("precision", "fp32")
        result = evaluate_run(run, split=split, progress=progress, precision=precision)
        out.append((split, result, record_evaluation(run, result, split=split, precision=precision)))
    return out

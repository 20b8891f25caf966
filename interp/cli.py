"""The `interp` command line: thin Typer commands over the library.

Each command parses and validates its arguments, calls one library function with keyword
arguments, and prints a summary. Errors in the user's input (`InterpError`) print one line and
exit with status 2; nothing else is caught, except in a process that `--num-processes N`
launched, where any failure goes to the launching process (`launching.end_if_launched`).
"""

from __future__ import annotations

import os
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from typer import TyperException
from typer._click.exceptions import NoArgsIsHelpError  # typer ships its own click
from typer.core import TyperGroup

from records.errors import InterpError


def _refuse(message: str) -> typer.Exit:
    """Print 'error: MESSAGE' as one line on stderr; the Exit (status 2) to raise.

    In a process that `interp ... --num-processes N` launched, the message goes to the launching
    process instead (`launching.end_if_launched`), which prints it once, and this one ends here,
    quietly, with status 1 (torchrun then stops the other processes).
    """
    from interp.commands.launching import end_if_launched

    line = " ".join(str(message).split())
    end_if_launched(line)
    typer.echo("error: " + line, err=True)
    return typer.Exit(2)


def _usage_error(exc: TyperException) -> typer.Exit:
    """A usage error (unknown option, missing or bad value, bad choice) as the one-line form."""
    message = exc.format_message()  # names the option or command, and close matches of an unknown one
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return _refuse(message + where)


class _Group(TyperGroup):
    """Turns an `InterpError` raised by any command, and a usage error of any command or sub-app
    (parsed under this group), into one 'error: ...' line on stderr and exit status 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        from interp.commands.launching import ARGV_KEY

        argv = list(args)  # kept for `--num-processes`, which starts `interp` again with the same arguments
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
            ctx.meta.setdefault(ARGV_KEY, argv)
            return ctx
        except NoArgsIsHelpError:
            raise
        except TyperException as exc:
            raise _usage_error(exc) from None
        except InterpError as exc:
            raise _refuse(str(exc)) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InterpError as exc:
            raise _refuse(str(exc)) from None
        except NoArgsIsHelpError:
            raise
        except TyperException as exc:
            raise _usage_error(exc) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # in a launched process: its traceback goes to the launching process, printed once
            from interp.commands.launching import end_if_launched

            end_if_launched(exc)  # ends a launched process; returns in any other
            raise


app = typer.Typer(
    cls=_Group,
    help="Train parameter-efficient deltas on a code-search encoder and explain what they changed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _mount() -> None:
    from interp.commands import (attn_diff, cka, data, delta_analyses, demo, encoder, evaluation, importing, listing, params, report,
                                 stats, study, train)

    app.add_typer(data.app, name="data", help="Build and check AdvTest-format code-search data.")
    app.command("encoder", help="Show the resolved base encoder: family, layers, heads, hidden size, source.")(encoder.encoder)
    app.command("params", help="Exact trainable parameters per preset, checked against the study's formulas.")(params.params)
    app.command("train", help="Train a delta (a preset or a method) and keep the best by valid MRR.")(train.train)
    app.command("eval", help="Re-evaluate a run on any split or AdvTest-format file; write predictions.")(evaluation.eval_)
    app.command("runs", help="List runs with method, trainable parameters, valid and test MRR.")(listing.runs)
    app.command("import", help="Register a peft adapter or a fine-tuned model directory from anywhere as a run.")(importing.import_)
    app.command("qualitative", help="Easy / hard / fixed / regressed examples of runs, their statistics and tests.")(stats.qualitative)
    app.command("compare", help="Paired significance tests of runs' MRR; seeds of a preset pooled.")(stats.compare)
    app.command("attn-diff", help="Per layer and head, how two runs' [CLS] attention differs over a whole split.")(attn_diff.attn_diff)
    app.command("cka", help="Per layer pair, linear CKA of two runs' hidden states over a whole split.")(cka.cka)
    app.command("ablate", help="Switch a delta off in some layers at inference and measure the MRR change.")(delta_analyses.ablate)
    app.command("anatomy", help="Norms, spectra, effective rank and subspace overlap of deltas, from their weights.")(delta_analyses.anatomy)
    app.command("attribute", help="Integrated-gradients attribution of a query-code score to tokens (Captum).")(delta_analyses.attribute)
    app.command("study", help="Train a grid of the study (presets x seeds), resumably, and write its tables.")(study.study)
    app.command("report", help="Render runs, analyses and study tables into an offline HTML site (runs/report).")(report.report)
    app.command("demo", help="Run the main job end to end on the embedded defaults.")(demo.demo)


_mount()


def main() -> None:
    app()


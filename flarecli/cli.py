"""The ``flare`` executable: the table of contents of the CLI.

Commands are registered explicitly here, in one table. Each command module imports its heavy
dependencies inside the command, so ``flare --help`` stays instant and never imports torch.
``main()`` is the only place where errors become messages and exit codes
(see ``flarecli.core.errors``).
"""

from __future__ import annotations

import functools
import inspect
import sys

import typer

from flarecli import __version__
from flarecli.commands import (
    audit,
    correct,
    demo,
    evaluate,
    export,
    infer,
    postprocess,
    preview,
    pseudolabel,
    recipes,
    report,
    stats,
    synth,
    train,
)


class _WithoutFlagPlaceholders:
    """Flags take no value, so ``--help`` shows no type for them. Typer's rich help prints
    an option's type as a placeholder (``<bool>``) unless it has a metavar, and ``--tta
    <bool>`` reads as if it wanted ``--tta true``; an empty metavar shows nothing. Applied
    to every parameter a command lists, ``--help`` itself included."""

    def get_params(self, ctx):
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_WithoutFlagPlaceholders, typer.core.TyperCommand):
    pass


class _Group(_WithoutFlagPlaceholders, typer.core.TyperGroup):
    pass


app = typer.Typer(
    name="flare",
    cls=_Group,
    help="Abdominal organ and pan-cancer tumor segmentation in CT from partially labeled and "
    "unlabeled scans (FLARE). Commands read and write folders of NIfTI files (<case>_0000.nii.gz"
    " scans, <case>.nii.gz label maps); infer, pseudolabel, stats and preview also read DICOM CT"
    " series, and infer writes DICOM SEG.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _help(func) -> str:
    """A command's docstring as help text: paragraphs kept, the source's line breaks inside a
    paragraph joined (Typer's rich help keeps them, which breaks lines mid-sentence)."""
    paragraphs = inspect.cleandoc(func.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


#: how an interrupted command goes on, where that is not by running it again as it was
_RESUME = {"train": "the last finished epoch is kept: run the same command with --resume to "
                    "continue from it"}


def _interruptible(func, name: str = ""):
    """Ctrl-C inside a command becomes flare's Interrupted (one line, exit code 130) instead
    of whatever the installed Typer/Click version does with KeyboardInterrupt."""

    @functools.wraps(func)
    def run(*args, **kwargs):
        from flarecli.core.errors import Interrupted

        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise (Interrupted(_RESUME[name]) if name in _RESUME else Interrupted()) from None

    return run


# in the order of the StMt loop
for _name, _func in (("synth", synth.synth), ("audit", audit.audit), ("train", train.train),
                     ("pseudolabel", pseudolabel.pseudolabel), ("correct", correct.correct),
                     ("infer", infer.infer), ("postprocess", postprocess.postprocess),
                     ("evaluate", evaluate.evaluate), ("stats", stats.stats),
                     ("preview", preview.preview), ("report", report.report),
                     ("export", export.export), ("demo", demo.demo)):
    app.command(_name, help=_help(_func), cls=_Command)(_interruptible(_func, _name))
for _command in recipes.app.registered_commands:
    _command.callback = _interruptible(_command.callback)
    _command.cls = _Command
app.add_typer(recipes.app, name="recipes", help=_help(recipes.recipes), cls=_Group)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flare {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """flare: train and run small, fast FLARE segmentation models from messy data."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, map flare errors to a one-line message and an exit code.

    Usage errors (exit 2) and --help/--version are handled by Typer's standalone mode;
    everything flare raises on purpose is a FlareError, Ctrl-C included (exit 130).
    """
    from flarecli.core.errors import FlareError, Interrupted

    try:
        try:
            app(args=argv, standalone_mode=True)
        except KeyboardInterrupt:
            raise Interrupted() from None
    except FlareError as e:
        prefix = "flare: " if isinstance(e, Interrupted) else "flare: error: "
        print(f"{prefix}{e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)

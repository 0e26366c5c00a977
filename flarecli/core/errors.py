"""The one error hierarchy of flare.

Core code raises these; only the CLI's ``main()`` turns them into a one-line message, an
optional hint and the exit code below. Exit codes (also in docs/cli.md):

====  ===========================================================================
code  meaning
====  ===========================================================================
0     success (notes about ignored files may have been printed)
1     unexpected internal error (a bug: please report it)
2     bad command line (unknown option, invalid value) -- Click/Typer's usage error
3     input error: a missing/unreadable folder or file, wrong naming, bad option value, an
      output that would overwrite an input or cannot be written
4     data problems: the run finished, but some cases had problems or failed (each one was
      reported on its own line; the other cases were processed), or the disk filled up
5     model or configuration error: an invalid or tampered model bundle, recipe or value
130   interrupted (Ctrl-C); the run left only complete outputs and resumes when run again
      (train: with --resume)
====  ===========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DATA = 4
EXIT_MODEL = 5
EXIT_INTERRUPTED = 130


class FlareError(Exception):
    """Base class. ``hint`` is an optional second line telling the user what to do."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(FlareError):
    """A file, folder or option value given by the user is unusable."""

    exit_code = EXIT_INPUT


class DataError(FlareError):
    """Problems in the data itself (geometry, label values, ...), or some cases failed."""

    exit_code = EXIT_DATA


class ModelError(FlareError):
    """An invalid, incompatible or tampered model bundle or configuration."""

    exit_code = EXIT_MODEL


class Interrupted(FlareError):
    """Ctrl-C: outputs are whole or absent, so the same command resumes."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, hint: str = "finished outputs are kept: run the same command again "
                 "to resume") -> None:
        super().__init__("interrupted", hint=hint)


class WriteFailed(DataError):
    """An output could not be written: that case fails, the others go on."""


class DiskFull(WriteFailed):
    """No space left on the device: the run stops, since every later write would fail too."""


class CasesFailed(DataError):
    """Raised by a command after it processed every case, when some of them had problems."""

    def __init__(self, n_failed: int, n_total: int, what: str = "cases") -> None:
        super().__init__(f"{n_failed} of {n_total} {what} had problems (see the lines above)")
        self.n_failed = n_failed
        self.n_total = n_total


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """A 'did you mean' hint for a mistyped choice, or None."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else None


def check_choice(name: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Validate a string option against its choices; raise InputError with a hint."""
    if value not in choices:
        hint = did_you_mean(value, choices) or f"choose one of: {', '.join(choices)}"
        raise InputError(f"invalid {name} '{value}'", hint=hint)
    return value


def check_volume(option: str, value: float) -> float:
    """A volume option in mm^3 (``--min-tumor-mm3``, ``--min-lesion-mm3``): a finite number
    >= 0. NaN would compare false with every size and keep every component, inf drop them
    all; both are refused with one line (InputError)."""
    import math

    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"{option} {value}: must be a finite number >= 0")
    return float(value)

"""The ``stability`` command line. Bad input: one line on stderr and exit code 2.

One module per subcommand, each with ``add_<name>(subparsers)`` that registers its parser
and handler; this module only assembles them and turns ``StabilityError`` into exit 2.

Importing this module is cheap on purpose: torch and pandas load inside ``main``, so a
Ctrl-C during those seconds of imports is one line and exit 130, not a traceback.
"""

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from stability.cli.args import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    SubParsers,
    silence_stdout,
)
from stability.cli.process_gc import imports_done, own_process, quick_teardown
from stability.cli.streams import guarded_stdout, standard_fds
from stability.errors import StabilityError


def commands() -> list[Callable[[SubParsers], None]]:
    """Every subcommand's ``add_<name>``, in ``--help`` order (imported here: see above)."""
    from stability.cli import (
        bench,
        coord_check,
        criticality,
        diff,
        doctor,
        experiments,
        gate,
        probe,
        report,
        sweep,
    )

    return [
        sweep.add_sweep,
        report.add_report,
        doctor.add_doctor,
        bench.add_bench_ingest,
        gate.add_baseline,
        gate.add_gate,
        diff.add_diff,
        probe.add_probe,
        criticality.add_criticality,
        coord_check.add_coord_check,
        experiments.add_experiments,
    ]


# Each command's module and ``add_<name>``: a run of one command imports and builds only its
# own parser (the others' imports were ~6 % of a default sweep, issue 27). ``commands()`` is
# the full list, for ``--help``; tests/test_cli_scripting.py checks the two agree.
COMMAND_MODULES = {
    "sweep": ("sweep", "add_sweep"),
    "report": ("report", "add_report"),
    "doctor": ("doctor", "add_doctor"),
    "bench-ingest": ("bench", "add_bench_ingest"),
    "baseline": ("gate", "add_baseline"),
    "gate": ("gate", "add_gate"),
    "diff": ("diff", "add_diff"),
    "probe": ("probe", "add_probe"),
    "criticality": ("criticality", "add_criticality"),
    "experiments": ("experiments", "add_experiments"),
    "coord-check": ("coord_check", "add_coord_check"),
}


def _one_command(words: Sequence[str]) -> Callable[[SubParsers], None] | None:
    """The ``add_<name>`` of the command ``words`` runs, if the first word names one."""
    if not words or words[0] not in COMMAND_MODULES:
        return None  # --help, --version, a typo: the full parser says what there is
    module, add = COMMAND_MODULES[words[0]]
    found: Callable[[SubParsers], None] = getattr(
        importlib.import_module(f"stability.cli.{module}"), add
    )
    return found


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


class _VersionAction(argparse.Action):
    """``--version``, its package metadata read only when asked (70 ms on every command)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"stability {_version('stability')} (torch {_version('torch')})")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser; given the ``argv`` it will parse, only the command that names (the
    same parser for those arguments, without importing every other command)."""
    parser = Parser(
        prog="stability",
        description="Probe, test, benchmark and gate the numerical stability of deep networks.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the versions")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    one = None if argv is None else _one_command(argv)
    for add in commands() if one is None else [one]:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 failures/regressions, 2 bad input,
    130 interrupted). A reader of stdout that goes away changes nothing but the output; a
    stdout that cannot be written (a full disk) is one line and exit 1, after the results."""
    standard_fds()
    with guarded_stdout() as out:
        code = _run(argv)
        out.flush()
        if out.failed and code in (0, EXIT_FAILED):
            print(
                f"stability: error: cannot write stdout ({out.failed}); the results were "
                "written first (the store and every output file): exit 1",
                file=sys.stderr,
            )
            code = EXIT_FAILED
    return code


def run() -> NoReturn:
    """The console script and ``python -m stability``: ``main``'s code as the exit status.

    After a Ctrl-C that ``main`` caught (one line, results whole or absent), CPython would
    still end the process by SIGINT instead of exit 130 if the KeyboardInterrupt had first
    escaped a nested evaluation (C code running Python through ``PyRun_*``, e.g. inside an
    import the signal landed in): that sets a process-wide flag which ``Py_RunMain`` obeys
    after finalisation, whatever ``sys.exit`` said (seen in CI: the line, then death by
    SIGINT). So an interrupted run flushes its streams and leaves with ``os._exit(130)``.

    The process runs this one command: the garbage collector skips the imports' objects
    and the interpreter's exit (``cli/process_gc.py``).
    """
    own_process()
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed, or its reader gone
                stream.flush()
        os._exit(code)
    quick_teardown()
    sys.exit(code)


def _run(argv: Sequence[str] | None) -> int:
    """The command's own exit code; bad input and Ctrl-C as one line on stderr."""
    try:
        words = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(words)
        imports_done()
        args = parser.parse_args(words)
        code: int = args.handler(args)
        return code
    except StabilityError as exc:
        print(f"stability: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("stability: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # A pipe the guard does not cover (a direct write to the file descriptor): say
        # nothing more, and exit as a shell reports a writer stopped by SIGPIPE.
        silence_stdout()
        return EXIT_BROKEN_PIPE

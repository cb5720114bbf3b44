"""
What every command shares, below the command line: the :class:`Target` the
group options name (the Program, opened on first use, and the problems its
readers record), the exit codes, and the parsing of netmem_ref arguments.

Commands and their ``--drgn`` snippets import this module, never
:mod:`netmem_probe.cli`, which imports the commands (see ARCHITECTURE.md).
The exit codes:

      0  ran, nothing to report beyond the output
      1  findings (layout mismatch, leaked pages, detached pools with pages in flight)
      2  usage error
      3  cannot open the target
      4  partial result: unreadable or inconsistent objects were skipped
     70  internal error: an exception the tool did not expect (a bug; --debug shows it)
    130  interrupted (Ctrl-C), as a shell reports a command SIGINT ended
    141  the reader of the output went away (``| head``), as a shell reports a
         command SIGPIPE ended: the output is cut, so no verdict is given
"""

import os
import sys
from typing import List, Optional, Sequence, Tuple

import click
import drgn

from netmem_probe.kallsyms_btf import LIVE_BTF
from netmem_probe.kernel.walk import Problems
from netmem_probe.target import (
    TargetError,
    core_truncation,
    describe,
    fallback_note,
    open_btf_types,
    open_debug_info,
    open_program,
)

__all__ = (
    "EXIT_CLOSED_PIPE",
    "EXIT_FINDINGS",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TARGET",
    "EXIT_USAGE",
    "PartialResultError",
    "Target",
    "netmem_arguments",
    "parse_netmem",
)

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_TARGET = 3
EXIT_PARTIAL = 4
# sysexits.h's EX_SOFTWARE: distinct from every code a run that worked can give.
EXIT_INTERNAL = 70
# 128 + the signal's number: what a shell reports for a command the signal
# killed, so scripts see the same code as for other tools.
EXIT_INTERRUPTED = 128 + 2  # SIGINT
EXIT_CLOSED_PIPE = 128 + 13  # SIGPIPE

WORD_MAX = (1 << 64) - 1


class Target:
    """The target the group options name; the Program is opened on first use."""

    def __init__(
        self,
        core: Optional[str],
        symbols: Sequence[str],
        fixture: Optional[str],
        debug: bool,
        prog: Optional[drgn.Program] = None,
        btf: Optional[str] = None,
    ) -> None:
        self.core = core
        self.symbols = tuple(symbols)
        self.fixture = fixture
        self.btf = btf
        self.debug = debug
        self.problems = Problems()
        self._prog = prog
        self._described = False
        self._truncated: Optional[str] = None
        self.skipped_input = 0  # malformed words read from standard input

    @property
    def prog(self) -> drgn.Program:
        if self._prog is None:
            self._prog = open_program(self.core, self.symbols, self.fixture, self.btf)
            self._truncated = core_truncation(self.core) if self.core is not None else None
            if self._truncated:
                click.echo(f"netmem-probe: warning: {self._truncated}", err=True)
            note = fallback_note(self._prog)
            if note:
                click.echo(f"netmem-probe: note: {note}", err=True)
        return self._prog

    def types_program(self) -> drgn.Program:
        """
        A Program for commands that need only types: with ``-s`` or
        ``--btf`` and no core or fixture, the debug info or BTF alone (no
        /proc/kcore, no root).
        """
        if self.core is None and self.fixture is None and self._prog is None:
            if self.symbols:
                return open_debug_info(self.symbols)
            if self.btf is not None:
                return open_btf_types(self.btf)
            try:
                return self.prog
            except TargetError:
                # No /proc/kcore (or no root): the running kernel's own BTF
                # still has its types, readable by anyone.
                if not os.access(LIVE_BTF, os.R_OK):
                    raise
                click.echo(
                    "netmem-probe: note: the live kernel's memory cannot be read here; "
                    f"its types come from {LIVE_BTF}",
                    err=True,
                )
                return open_btf_types(LIVE_BTF)
        return self.prog

    def describe(self) -> str:
        """
        What the target is (live and racy, a consistent dump, or a dump cut
        short), for the output.
        """
        self._described = True
        prog = self.prog  # opening it finds a truncation
        if self._truncated:
            # Consistent, but with a part missing: not the whole snapshot.
            return "core dump (truncated)"
        return describe(prog)

    def finish(self, findings: bool) -> int:
        """Report skipped objects on stderr and pick the exit code."""
        if (
            self._prog is not None
            and not self._described
            and (self._prog.flags & drgn.ProgramFlags.IS_LIVE)
        ):
            # Output without a summary line (JSON, one record) still says it.
            click.echo(
                f"netmem-probe: note: read from the {describe(self._prog)}: objects "
                "were read one by one while the kernel ran",
                err=True,
            )
        if self.problems:
            self._report_problems()
            return EXIT_PARTIAL
        if self.skipped_input:
            return EXIT_PARTIAL  # each skipped word was named as it was read
        return EXIT_FINDINGS if findings else EXIT_OK

    def not_found(self, message: str, param_hint: str) -> click.ClickException:
        """
        The error for something the user named that the target lacks: a
        usage error when every object could be read, else a partial result
        (exit code 4), since it may be one of the objects that could not.
        """
        if not self.problems:
            return click.BadParameter(message, param_hint=param_hint)
        self._report_problems()
        return PartialResultError(f"{message} among the objects that could be read")

    def _report_problems(self) -> None:
        click.echo(
            f"netmem-probe: warning: {len(self.problems)} object(s) skipped "
            "(unreadable or inconsistent):",
            err=True,
        )
        for problem in self.problems.items[:20]:
            click.echo(f"  {problem}", err=True)
        if len(self.problems) > 20:
            click.echo(f"  ... and {len(self.problems) - 20} more", err=True)


class PartialResultError(click.ClickException):
    """A command cannot answer because objects it needed were unreadable."""

    exit_code = EXIT_PARTIAL


def parse_netmem(text: str) -> int:
    """A netmem_ref from hex (0x...) or decimal text; ValueError if malformed."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValueError("not a hex (0x...) or decimal number") from None
    if value < 0:
        raise ValueError("negative")
    if value > WORD_MAX:
        raise ValueError("larger than 64 bits")
    return value


def netmem_arguments(args: Sequence[str], target: Optional["Target"] = None) -> List[int]:
    """
    The netmem_ref values of a ``NETMEM...`` argument, ``-`` reading more
    from standard input; a usage error for none or a malformed argument.  A
    malformed word of standard input is reported on stderr and skipped (the
    rest is still read, and ``target`` finishes with exit code 4).
    """
    words: List[Tuple[str, bool]] = []
    for arg in args:
        if arg == "-":
            words.extend((word, True) for word in sys.stdin.read().split())
        else:
            words.append((arg, False))
    if not words:
        raise click.UsageError("no NETMEM values given")
    values = []
    for word, from_stdin in words:
        try:
            values.append(parse_netmem(word))
        except ValueError as e:
            if not from_stdin:
                raise click.BadParameter(
                    f"{word!r} is not a netmem_ref ({e})", param_hint="NETMEM"
                ) from e
            click.echo(
                f"netmem-probe: warning: {word!r} on standard input is not a netmem_ref "
                f"({e}): skipped",
                err=True,
            )
            if target is not None:
                target.skipped_input += 1
    return values

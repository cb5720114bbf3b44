"""
The ``netmem-probe`` command line: target options on the group, one
subcommand per report (see :mod:`netmem_probe.commands`), and every failure
turned into one line and an exit code (the codes are in
:mod:`netmem_probe.context`).
"""

import contextlib
import errno
import os
import re
import sys
import traceback
from typing import Any, Iterator, List, Optional, Sequence

import click
import drgn

from netmem_probe.commands import COMMANDS, FLEET_COMMANDS
from netmem_probe.context import (
    EXIT_CLOSED_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TARGET,
    EXIT_USAGE,
    Target,
)
from netmem_probe.target import BUNDLED_FIXTURES, TargetError

__all__ = ("cli", "main")

GROUP_EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pools
      every page pool of a bundled fixture (no root needed)
  sudo netmem-probe pools
      every page pool of the running kernel, listed or not
  netmem-probe -c vmcore -s vmlinux pools --ynl
      the pools of a crash dump, exactly as ynl --dump page-pool-get prints them
  netmem-probe -s /usr/lib/debug/boot/vmlinux-$(uname -r) layout
      check struct page / netmem_desc / net_iov agreement from debug info
  netmem-probe --btf /sys/kernel/btf/vmlinux layout
      the same check from the running kernel's BTF (no root, no debug info)
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed leaks --pool 10
      a stalled pool's pages: parked, cached or leaked (docs/guide.md
      follows this investigation from the dmesg line on)
  netmem-probe -c vmcore -s vmlinux pool 19 --drgn > pool19.py
      any command as a plain drgn script for this kernel, to read and adapt
"""


class _ClosedPipe(Exception):
    """
    Writing the output failed with EPIPE: its reader went away.  Not an
    OSError, so that click's own handler (``sys.exit(1)``, a finding's
    code) does not take it.
    """


class _Interrupted(Exception):
    """Ctrl-C, kept from click, which turns it into an Abort."""


@contextlib.contextmanager
def _escaping_click() -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
        raise _ClosedPipe() from e
    except KeyboardInterrupt:
        raise _Interrupted() from None


class _Group(click.Group):
    """The group, with a closed pipe and Ctrl-C passed on to :func:`main` as they are."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        # --help and --version print while the arguments are parsed.
        with _escaping_click():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _escaping_click():
            return super().invoke(ctx)


def _complete_fixture(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """A directory, or the name of a fixture bundled with netmem-probe."""
    from click.shell_completion import CompletionItem

    names = sorted(p.name for p in BUNDLED_FIXTURES.iterdir() if (p / "vmcore").is_file())
    return [CompletionItem(incomplete, type="dir")] + [
        CompletionItem(name) for name in names if name.startswith(incomplete)
    ]


@click.group(
    cls=_Group,
    epilog=GROUP_EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "-c",
    "--core",
    metavar="PATH",
    type=click.Path(),
    help="read a vmcore (ELF or kdump-compressed)",
)
@click.option(
    "-s",
    "--symbols",
    metavar="PATH",
    type=click.Path(),
    multiple=True,
    help="debug info: a vmlinux, a .ko.debug, or a directory (repeatable)",
)
@click.option(
    "-f",
    "--fixture",
    metavar="DIR",
    shell_complete=_complete_fixture,
    help="read a vmcore stub fixture directory (or a bundled fixture's name)",
)
@click.option(
    "--btf",
    metavar="PATH",
    type=click.Path(),
    help="kernel types from BTF instead of debug info: /sys/kernel/btf/vmlinux, "
    "or an ELF with a .BTF section (symbols then come from kallsyms)",
)
@click.option("--debug", is_flag=True, help="show tracebacks of errors")
@click.version_option(package_name="netmem-probe")
@click.pass_context
def cli(
    ctx: click.Context,
    core: Optional[str],
    symbols: Sequence[str],
    fixture: Optional[str],
    btf: Optional[str],
    debug: bool,
) -> None:
    """Show what the kernel's page pools and network memory are doing.

    Targets: the live kernel (default; needs root), a vmcore (-c, with -s),
    or a fixture (-f).  Without debug info, the kernel's own BTF and kallsyms
    are used (or --btf names the BTF).
    """
    if core is not None and fixture is not None:
        raise click.UsageError("-c/--core and -f/--fixture are mutually exclusive")
    if btf is not None and symbols:
        raise click.UsageError("--btf and -s/--symbols are mutually exclusive")
    if fixture is not None and symbols:
        raise click.UsageError("-s/--symbols does not apply to a fixture (it carries its types)")
    if btf is not None and fixture is not None:
        raise click.UsageError("--btf does not apply to a fixture (it carries its types)")
    # main(program=...) hands an already-open Program over in ctx.obj.
    ctx.obj = Target(core, symbols, fixture, debug, prog=ctx.obj, btf=btf)


for _command in COMMANDS + FLEET_COMMANDS:
    cli.add_command(_command)


# drgn.plugins entry points that only add drgn CLI commands: drgn's own and ours.
COMMAND_PLUGINS = ("builtin_commands", "crash_commands", "netmem_probe")


@contextlib.contextmanager
def _without_command_plugins() -> Iterator[None]:
    """
    drgn loads every drgn.plugins entry point (once per process) when a
    Program gets its target; importing the command plugins is 0.2 s of a
    0.5 s ``pools`` run, for commands this CLI never runs.  Other plugins
    (debug info finders, say) still load.  The environment is put back so a
    drgn started from the same process sees its commands.
    """
    saved = os.environ.get("DRGN_DISABLE_PLUGINS")
    if saved != "*":
        os.environ["DRGN_DISABLE_PLUGINS"] = ",".join(filter(None, (saved, *COMMAND_PLUGINS)))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DRGN_DISABLE_PLUGINS", None)
        else:
            os.environ["DRGN_DISABLE_PLUGINS"] = saved


def main(argv: Optional[List[str]] = None, program: Optional[drgn.Program] = None) -> int:
    """
    Entry point: run the CLI and turn every failure into one line and an exit code.

    :param program: run against this Program instead of opening the target the
        options name (tests and fuzzing drive fake-memory Programs this way).
    """
    with _without_command_plugins():
        return _run(argv, program)


def _run(argv: Optional[List[str]], program: Optional[drgn.Program]) -> int:
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    if not args and "_NETMEM_PROBE_COMPLETE" not in os.environ:
        # No command at all (and no shell asking click for completions): the
        # help is what the user needs, on stdout so that stderr keeps to the
        # one-line error.  (click 8.2 raises NoArgsIsHelpError for this;
        # click 8.1, the newest for Python 3.9, prints the help and exits 0.)
        with click.Context(cli, info_name="netmem-probe") as ctx:
            click.echo(ctx.get_help())
        click.echo("netmem-probe: error: no command given (see --help)", err=True)
        return EXIT_USAGE
    try:
        code = cli.main(args=argv, prog_name="netmem-probe", standalone_mode=False, obj=program)
        # Output still buffered fails here, if its reader is gone.
        sys.stdout.flush()
    except click.UsageError as e:
        message = e.format_message()
        # One pointer is enough: a message that ends in its own hint
        # ("(see netmem-probe providers)", "(choose from ...)") keeps it.
        hint = "" if message.endswith(")") else " (see --help)"
        extra = re.search(r"unexpected extra arguments? \((.*)\)", message)
        if extra and e.ctx is not None and e.ctx.info_name == "pools":
            # pools lists them all; pool ID shows one.
            hint = f"; for one pool: netmem-probe pool {extra.group(1).split()[0]}"
        click.echo(f"netmem-probe: error: {message}{hint}", err=True)
        return EXIT_USAGE
    except click.ClickException as e:
        click.echo(f"netmem-probe: error: {e.format_message()}", err=True)
        return e.exit_code
    except (_Interrupted, KeyboardInterrupt, click.Abort):
        click.echo("netmem-probe: error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as e:
        return e.exit_code
    except TargetError as e:
        click.echo(f"netmem-probe: error: {e}", err=True)
        return EXIT_TARGET
    except (_ClosedPipe, BrokenPipeError):
        _discard_stdout()
        return EXIT_CLOSED_PIPE
    except Exception as e:  # noqa: BLE001 - a debugging tool must not die with a traceback
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if debug:
            traceback.print_exc()
            hint = "an internal error (the traceback is above)"
        else:
            hint = "an internal error (use --debug for the traceback)"
        click.echo(f"netmem-probe: error: {type(e).__name__}: {reason}: {hint}", err=True)
        return EXIT_INTERNAL
    return code if isinstance(code, int) else EXIT_OK


def _discard_stdout() -> None:
    """
    Point stdout at /dev/null: output still buffered for the closed pipe
    would fail again when Python flushes it at exit.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's StringIO): nothing buffered for a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)

"""
``netmem-probe triage DUMP... | DIR``: ``check`` over a pile of crash dumps
(or fixtures), one summary row per dump.  Each dump is opened by its own
``netmem-probe check --json`` process, ``--jobs`` of them at a time, so a
dump that crashes, hangs or eats memory costs its own row and nothing else:
a dump that cannot be opened is a row with its error, and the batch goes on.
"""

import json
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from netmem_probe.context import EXIT_FINDINGS, EXIT_OK, EXIT_PARTIAL, Target
from netmem_probe.report import emit_json_line, human_seconds
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import no_drgn_option

__all__ = ("triage",)

EXAMPLES = """\b
EXAMPLES:
  netmem-probe triage /var/crash
      every dump under /var/crash, one row each (without debug info: BTF)
  netmem-probe -s vmlinux triage --jobs 4 host1.vmcore host2.vmcore
      two dumps of one kernel, with its debug info, four at a time
  netmem-probe triage fixtures/vmcore-stubs --json
      every bundled fixture, as JSON Lines
"""

#: Files of a fixture directory (``scripts/make-fixtures``).
FIXTURE_FILES = ("vmcore", "types.elf", "expected.json")
#: Directory levels searched below a DIR for dumps.
MAX_DEPTH = 4
COLUMNS = [
    Column("dump"),
    Column("release"),
    Column("pools", number=True, largest_first=True),
    Column(
        "detached-waiting",
        header="DETACHED",
        cell=lambda r: (
            None
            if r["detached-waiting"] is None
            else f"{r['detached-waiting']} ({r['inflight-waiting']} pages)"
        ),
        number=True,
        largest_first=True,
    ),
    Column("leaked", number=True, largest_first=True),
    Column(
        "oldest-detach-age",
        header="OLDEST",
        cell=lambda r: (
            None
            if r["oldest-detach-age"] is None
            else f"{human_seconds(r['oldest-detach-age'])} (pool {r['oldest-detach-id']})"
        ),
        number=True,
        largest_first=True,
    ),
    Column("verdict", color=lambda r: "red" if r["verdict"] == "unhealthy" else None),
    Column("error", free_text=True),
]


def _is_fixture(path: Path) -> bool:
    return all((path / name).is_file() for name in FIXTURE_FILES)


def find_dumps(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """
    (kind, path) of every target the arguments name: a fixture directory
    (``fixture``), a file (``core``), or a directory searched for both;
    a path that does not exist is kept (``missing``) to be reported.
    """
    found: List[Tuple[str, str]] = []

    def walk(path: Path, depth: int) -> None:
        if _is_fixture(path):
            found.append(("fixture", str(path)))
        elif path.is_dir():
            if depth >= MAX_DEPTH:
                return
            try:
                entries = sorted(path.iterdir())
            except OSError as e:
                found.append(("unreadable", f"{path}: {e.strerror or e}"))
                return
            for entry in entries:
                if not entry.name.startswith("."):
                    walk(entry, depth + 1)
        elif path.is_file():
            found.append(("core", str(path)))
        elif not path.exists() and depth == 0:
            found.append(("missing", str(path)))

    for text in paths:
        walk(Path(text), 0)
    return found


def _error(stderr: str, code: int) -> str:
    """The one-line error a child printed (its last ``error:`` line)."""
    lines = [line for line in stderr.splitlines() if line.startswith("netmem-probe: error: ")]
    if lines:
        return lines[-1][len("netmem-probe: error: ") :]
    tail = stderr.strip().splitlines()
    return tail[-1] if tail else f"exit code {code}"


def _row(
    path: str, kind: str, report: Optional[Dict[str, Any]], code: int, error: Optional[str]
) -> Dict[str, Any]:
    row: Dict[str, Any] = {
        "dump": path,
        "kind": kind,
        "exit-code": code,
        "release": None,
        "pools": None,
        "detached-waiting": None,
        "inflight-waiting": None,
        "leaked": None,
        "oldest-detach-age": None,
        "oldest-detach-id": None,
        "kernel-log-messages": None,
        "findings": None,
        "verdict": None,
        "error": error,
    }
    if report is not None:
        leaks = report["leaks"]
        log = report["kernel-log"]
        row.update(
            {
                "release": report["release"],
                "pools": report["pools"]["total"],
                "detached-waiting": report["detached"]["waiting"],
                "inflight-waiting": report["detached"]["inflight"],
                "leaked": None if leaks is None else leaks["leaked"] + leaks["missing"],
                "oldest-detach-age": report["detached"]["oldest-detach-age"],
                "oldest-detach-id": report["detached"]["oldest-id"],
                "kernel-log-messages": log["messages"],
                "findings": len(report["findings"]),
                "verdict": report["verdict"],
            }
        )
    return row


def _run_one(
    kind: str, path: str, target_args: List[str], check_args: List[str], timeout: float
) -> Dict[str, Any]:
    if kind == "missing":
        return _row(path, kind, None, 2, "no such file or directory")
    if kind == "unreadable":
        return _row(path.split(": ", 1)[0], kind, None, 3, path.split(": ", 1)[1])
    where = ["-f", path] if kind == "fixture" else ["-c", path, *target_args]
    cmd = [sys.executable, "-m", "netmem_probe", *where, "check", "--json", *check_args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return _row(path, kind, None, EXIT_PARTIAL, f"timed out after {timeout:g}s")
    report: Optional[Dict[str, Any]] = None
    try:
        parsed = json.loads(proc.stdout) if proc.stdout.strip() else None
        report = parsed if isinstance(parsed, dict) and "verdict" in parsed else None
    except ValueError:
        report = None
    error = None if report is not None else _error(proc.stderr, proc.returncode)
    if report is not None and proc.returncode == EXIT_PARTIAL:
        error = "partial: unreadable or inconsistent objects were skipped"
    return _row(path, kind, report, proc.returncode, error)


@click.command(epilog=EXAMPLES)
@click.argument("paths", metavar="DUMP...|DIR", nargs=-1, required=True)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="check N dumps at a time (each in its own process)",
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per dump")
@click.option(
    "--leaks/--no-leaks",
    default=True,
    show_default=True,
    help="leak verdicts of detached pools' pages (searches each dump's memory)",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    metavar="SECONDS",
    help="give up on a dump after this long",
)
@table_options(COLUMNS, [c.name for c in COLUMNS])
@no_drgn_option(
    "it runs check on many dumps, each in its own process; a drgn script reads one "
    "Program (see layout, pools and leaks --drgn)"
)
@click.pass_obj
def triage(
    target: Target,
    paths: Sequence[str],
    jobs: int,
    as_json: bool,
    leaks: bool,
    timeout: float,
    table: Table,
) -> int:
    """check over many dumps: one summary row per dump.

    DUMP is a vmcore (ELF or kdump) or a fixture directory; a DIR is searched
    for both. Each dump is checked by its own netmem-probe process, --jobs at
    a time; -s/--btf given before triage apply to every vmcore. A row gives
    the kernel release, the pools, the detached pools with pages out, the
    leaked pages, the oldest detach and the check verdict; a dump that
    cannot be opened is a row with its error. Exit code 1 when a dump is
    unhealthy, 4 when one could not be checked, else 0.
    """
    if target.core is not None or target.fixture is not None:
        raise click.UsageError("triage takes its dumps as arguments, not -c/-f")
    target_args: List[str] = []
    for symbols in target.symbols:
        target_args += ["-s", symbols]
    if target.btf is not None:
        target_args += ["--btf", target.btf]
    check_args = [] if leaks else ["--no-leaks"]
    dumps = find_dumps(paths)
    if not dumps:
        raise click.BadParameter("no dump or fixture found", param_hint="DUMP...|DIR")
    rows: List[Dict[str, Any]] = []
    # Threads only wait for the child processes, which do the work.
    with ThreadPoolExecutor(max_workers=min(jobs, len(dumps))) as pool:
        futures: List[Future] = [
            pool.submit(_run_one, kind, path, target_args, check_args, timeout)
            for kind, path in dumps
        ]
        for future in futures:
            row = future.result()
            rows.append(row)
            if as_json and table.sort is None:
                emit_json_line(row)
    if as_json and table.sort is not None:
        for row in table.sorted(rows):
            emit_json_line(row)
    if not as_json:
        table.print(rows)
    if not as_json and table.header:
        checked = [r for r in rows if r["verdict"] is not None]
        click.echo(
            f"{len(rows)} dumps: {sum(1 for r in checked if r['verdict'] == 'unhealthy')} "
            f"unhealthy, {sum(1 for r in checked if r['verdict'] == 'healthy')} healthy, "
            f"{sum(1 for r in rows if r['verdict'] is None)} not checked"
        )
    if any(r["error"] is not None for r in rows):
        return EXIT_PARTIAL
    if any(r["verdict"] == "unhealthy" for r in rows):
        return EXIT_FINDINGS
    return EXIT_OK

"""Shared test plumbing: the bundled fixtures, and the CLI run in-process."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import drgn
import pytest

from netmem_probe.cli import main
from netmem_probe.kernel.holders import NetmemTarget, make_target
from netmem_probe.kernel.walk import Problems
from netmem_probe.target import open_program

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "vmcore-stubs"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


class Run(NamedTuple):
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str, stdin: str = "", program: Optional[drgn.Program] = None) -> Run:
    """
    Run ``netmem-probe ARGS`` in this process; returns exit code and output.
    With ``program``, the commands read that Program (a fake world's).
    """
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args), program=program)
    finally:
        sys.stdin = old_stdin
    return Run(code, out.getvalue(), err.getvalue())


def target_at(prog: drgn.Program, address: int) -> NetmemTarget:
    """The page or net_iov holding ``address``; a test fails where there is none."""
    target = make_target(prog, address, Problems())
    assert target is not None, f"{address:#x} is in no page or net_iov"
    return target


def expected(name: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / name / "expected.json").read_text())


def fixtures_with(key: str) -> List[str]:
    return [name for name in FIXTURE_NAMES if key in expected(name)]


@pytest.fixture(scope="session")
def fixture_program():
    """One Program per fixture per session."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = open_program(fixture=str(FIXTURES / name))
        return cache[name]

    return get

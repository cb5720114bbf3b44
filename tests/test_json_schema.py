"""
Every command's ``--json`` on every bundled fixture validates against its
JSON Schema in docs/schema/ (written by scripts/make-schemas), and the
schemas are current.
"""

import functools
import json
import subprocess
import sys
from typing import Any, Dict, List

import jsonschema
import pytest
from conftest import FIXTURE_NAMES, ROOT, run_cli
from invocations import invocations
from test_watch import _nic_pools, _traffic, _world

from netmem_probe.fake.faults import FaultyMemory

SCHEMAS = ROOT / "docs" / "schema"
#: Commands whose --json is JSON Lines: the schema is of one line.
LINES = {"pages", "leaks", "niovs", "pools-watch", "triage"}


def schema_name(args: List[str]) -> str:
    """The schema of a command line's --json output."""
    if args[0] == "pages" and "--count" in args:
        return "pages-count"
    if args[0] == "pools" and "--watch" in args:
        return "pools-watch"
    if args[0] == "pools" and "--check-netlink" in args:
        return "pools-check-netlink"
    return args[0]


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check(args: List[str], out: str) -> None:
    """Validate a command's --json output against its schema; fail naming each error."""
    name = schema_name(args)
    documents: List[Any]
    if name in LINES:
        documents = [json.loads(line) for line in out.splitlines()]
    else:
        documents = [json.loads(out)]
    errors = [
        f"{' '.join(args)}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for doc in documents
        for e in validator(name).iter_errors(doc)
    ]
    assert not errors, "\n".join(errors[:10])


def test_every_command_has_a_schema():
    from netmem_probe.commands import COMMANDS

    for command in COMMANDS:
        assert (SCHEMAS / f"{command.name}.schema.json").exists(), command.name


def test_the_schemas_are_what_make_schemas_writes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-schemas"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_commands_json_matches_its_schema_on_every_fixture(name, fixture_program):
    prog = fixture_program(name)
    for args in invocations(name):
        result = run_cli(*args, "--json", program=prog)
        assert result.code in (0, 1), (args, result)
        check(args, result.out)


def test_watch_json_matches_its_schema():
    w = _world()
    fm = FaultyMemory(w)
    leaking, steady, _ = _nic_pools(w)
    _traffic(fm, leaking, hold=3, release=1, alloc_fast=30)
    _traffic(fm, steady, hold=4, release=4)
    args = ["pools", "--watch", "0.01", "-n", "3", "--json"]
    result = run_cli(*args, program=fm.program(live=True))
    assert result.code == 0, result
    check(args, result.out)


def test_a_schema_refuses_an_invented_or_renamed_key():
    record: Dict[str, Any] = json.loads(
        run_cli("-f", "fixtures/vmcore-stubs/linux-7.3-mixed", "decode", "0x1", "--json").out
    )[0]
    assert not list(validator("decode").iter_errors([record]))
    renamed = {("dma_addr" if k == "dma-addr" else k): v for k, v in record.items()}
    assert list(validator("decode").iter_errors([renamed]))
    assert list(validator("decode").iter_errors([dict(record, owner=0)]))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_check_json_matches_its_schema_on_every_fixture(name):
    args = ["check", "--json"]
    check(args, run_cli("-f", str(ROOT / "fixtures" / "vmcore-stubs" / name), *args).out)


def test_triage_json_lines_match_their_schema(tmp_path):
    (tmp_path / "junk").write_text("not a dump\n")
    args = [
        "triage",
        "--json",
        "--no-leaks",
        str(ROOT / "fixtures" / "vmcore-stubs"),
        str(tmp_path),
    ]
    check(args, run_cli(*args).out)

"""
``triage``: ``check`` over many dumps, each in its own process.  Its rows
must hold what ``check --json`` says of each fixture, and anything that is
not a dump must become a row with its error without stopping the batch.
"""

import json

from conftest import FIXTURE_NAMES, FIXTURES, run_cli


def _rows(out: str):
    return [json.loads(line) for line in out.splitlines()]


def test_triage_of_the_fixtures_directory_gives_each_fixture_its_check_summary():
    result = run_cli("triage", "--jobs", "2", "--json", str(FIXTURES))
    rows = _rows(result.out)
    assert [row["dump"] for row in rows] == [str(FIXTURES / name) for name in FIXTURE_NAMES]
    for row in rows:
        check = run_cli("-f", row["dump"], "check", "--json")
        report = check.json()
        assert row["kind"] == "fixture" and row["error"] is None
        assert row["exit-code"] == check.code
        assert row["release"] == report["release"]
        assert row["pools"] == report["pools"]["total"]
        assert row["detached-waiting"] == report["detached"]["waiting"]
        assert row["inflight-waiting"] == report["detached"]["inflight"]
        assert row["leaked"] == report["leaks"]["leaked"] + report["leaks"]["missing"]
        assert row["oldest-detach-age"] == report["detached"]["oldest-detach-age"]
        assert row["verdict"] == report["verdict"]
    assert result.code == 1  # some fixtures are unhealthy, all could be checked


def test_what_is_not_a_dump_is_a_row_with_its_error_and_the_batch_goes_on(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dump\n")
    (tmp_path / "truncated.vmcore").write_bytes(b"\x7fELF" + bytes(60))
    (tmp_path / "crash" / "2026-12-01").mkdir(parents=True)
    (tmp_path / "crash" / "2026-12-01" / "vmcore").write_bytes(bytes(4096))
    fixture = str(FIXTURES / "linux-7.3-many-pools")
    missing = str(tmp_path / "gone.vmcore")
    result = run_cli("triage", "--json", "-j", "3", str(tmp_path), missing, fixture)
    rows = {row["dump"]: row for row in _rows(result.out)}
    bad = [
        str(tmp_path / "crash" / "2026-12-01" / "vmcore"),
        str(tmp_path / "notes.txt"),
        str(tmp_path / "truncated.vmcore"),
        missing,
    ]
    assert set(rows) == {*bad, fixture}
    for path in bad:
        row = rows[path]
        assert row["verdict"] is None and row["release"] is None
        assert row["error"] and "\n" not in row["error"]
        assert "Traceback" not in row["error"]
    assert rows[missing]["error"] == "no such file or directory"
    assert rows[str(tmp_path / "notes.txt")]["exit-code"] == 3
    assert rows[fixture]["verdict"] == "healthy" and rows[fixture]["error"] is None
    assert result.code == 4  # some dumps could not be checked


def test_triage_table_has_a_row_per_dump_and_a_summary():
    result = run_cli(
        "triage", str(FIXTURES / "linux-7.3-mixed"), str(FIXTURES / "linux-7.3-many-pools")
    )
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["DUMP", "RELEASE", "POOLS", "DETACHED"]
    assert len(lines) == 2 + 2 + 1
    assert lines[-1] == "2 dumps: 1 unhealthy, 1 healthy, 0 not checked"
    assert result.code == 1


def test_triage_refuses_a_target_option_and_an_empty_directory(tmp_path):
    for args in (
        ["-f", str(FIXTURES / "linux-7.3-mixed"), "triage", str(FIXTURES)],
        ["triage", str(tmp_path)],
        ["triage"],
    ):
        result = run_cli(*args)
        assert result.code == 2, (args, result)
        assert result.err.startswith("netmem-probe: error: ") and result.err.count("\n") == 1

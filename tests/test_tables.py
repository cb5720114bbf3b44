"""
Tables: one implementation (netmem_probe.report.table) behind every tabular
command: --no-header, --columns and --sort on each, numbers right-aligned,
one header for one JSON key in every command, full width in a pipe, fitted
to a terminal, colour only on a terminal and never with NO_COLOR.
"""

import importlib
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from typing import Dict, List, Optional

import pytest
from conftest import FIXTURES, run_cli

from netmem_probe.cli import main
from netmem_probe.report.table import Column, Table

F = str(FIXTURES / "linux-7.3-mixed")


def _module(name):
    # netmem_probe.commands.NAME is the click command; the module is this.
    return importlib.import_module(f"netmem_probe.commands.{name}")


holders, layout, leaks, niovs, pages, pools, providers, triage, watch_command = map(
    _module,
    ["holders", "layout", "leaks", "niovs", "pages", "pools", "providers", "triage", "watch"],
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# command line -> the header line of its (first) table
TABULAR = {
    "pools": ["-f", F, "pools"],
    "layout": ["-f", F, "layout"],
    "providers": ["-f", F, "providers"],
    "niovs": ["-f", F, "niovs", "--area", "dmabuf:3"],
    "pages": ["-f", F, "pages"],
    "pages --count": ["-f", F, "pages", "--count"],
    "holders": ["-f", F, "holders", "0xffffea0000180500"],
    "leaks": ["-f", F, "leaks", "--pool", "10"],
    "triage": [
        "triage",
        "--no-leaks",
        str(FIXTURES / "linux-7.3-mixed"),
        str(FIXTURES / "linux-6.12-mixed"),
    ],
}
COLUMN_LISTS = {
    "pools": pools.COLUMNS,
    "watch": watch_command.COLUMNS,
    "layout": layout.COLUMNS,
    "providers": providers.COLUMNS,
    "niovs": niovs.COLUMNS,
    "pages": pages.PAGE_COLUMNS,
    "pages --count": pages.COUNT_COLUMNS,
    "holders": holders.COLUMNS,
    "leaks": leaks.COLUMNS,
    "triage": triage.COLUMNS,
}


def table_lines(out):
    """The first table in ``out``: its header, its rule, its rows."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line) <= {"-", " "})
    rows = []
    for line in lines[rule + 1 :]:
        # The end, or summary lines: pools' and pages', leaks' holder summary, triage's.
        if (
            not line.strip()
            or " [core dump (" in line
            or line.startswith(("holders:", "to "))
            or re.match(r"\d+ dumps: ", line)
        ):
            break
        rows.append(line)
    return lines[rule - 1], lines[rule], rows


@pytest.mark.parametrize("name", TABULAR)
def test_every_tabular_command_drops_its_header_on_request(name):
    with_header = run_cli(*TABULAR[name])
    header, rule, rows = table_lines(with_header.out)
    without = run_cli(*TABULAR[name], "--no-header")
    assert without.code == with_header.code
    assert header not in without.out and rule not in without.out
    # The rows stay; a command's own summary line goes with the header.
    lines = [line.split() for line in without.out.splitlines()]
    assert all(row.split() in lines for row in rows)


@pytest.mark.parametrize("name", TABULAR)
def test_every_tabular_command_picks_its_columns_and_sorts(name):
    columns = COLUMN_LISTS[name]
    picked = [columns[1], columns[0]]
    result = run_cli(
        *TABULAR[name], "--columns", ",".join(c.name for c in picked), "--sort", columns[0].name
    )
    header, rule, rows = table_lines(result.out)
    assert header.split() == [c.title for c in picked]
    assert rows and len(rule.split()) == 2


@pytest.mark.parametrize("option, value", [("--columns", "id,bogus"), ("--sort", "bogus")])
def test_an_unknown_column_is_a_usage_error_naming_the_choices(option, value):
    result = run_cli("-f", F, "pools", option, value)
    assert result.code == 2
    assert "no column 'bogus' (choose from id, state, netdev," in result.err


def test_columns_are_named_by_their_json_key_or_their_header_in_any_case():
    by_key = run_cli("-f", F, "pools", "--columns", "id,inflight-mem,detach-age")
    by_header = run_cli("-f", F, "pools", "--columns", "ID,mem,Detached")
    assert by_key.out == by_header.out
    assert table_lines(by_key.out)[0].split() == ["ID", "MEM", "DETACHED"]


def test_one_header_for_one_json_key_in_every_command():
    titles: Dict[str, Dict[str, List[str]]] = {}
    for command, columns in COLUMN_LISTS.items():
        for column in columns:
            titles.setdefault(column.name, {}).setdefault(column.title, []).append(command)
    # layout's member sides are its own: OFFSET and SIZE of each side.
    clashes = {name: t for name, t in titles.items() if len(t) > 1}
    assert clashes == {}
    assert titles["pp-ref-count"] == {"PP-REFS": ["niovs", "pages", "leaks"]}
    assert set(titles["refcount"]) == {"REFCOUNT"} and set(titles["dma-index"]) == {"DMA-INDEX"}


def test_numbers_are_right_aligned_text_left():
    header, rule, rows = table_lines(run_cli("-f", F, "pools").out)
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    titles = header.split()
    inflight = spans[titles.index("INFLIGHT")]
    netdev = spans[titles.index("NETDEV")]
    for row in rows:
        cell = row[inflight[0] : inflight[1]]
        assert cell == cell.strip().rjust(len(cell)), row
        text = row[netdev[0] : netdev[1]]
        assert text == text.strip().ljust(len(text)), row


def test_sort_puts_counts_largest_first_and_what_was_not_read_last():
    rows: List[Dict[str, Optional[int]]] = [
        {"id": 1, "n": 3},
        {"id": 2, "n": None},
        {"id": 3, "n": 7},
        {"id": 4, "n": 5},
    ]
    count = Column("n", number=True, largest_first=True)
    assert [r["id"] for r in Table([count], sort=count).sorted(rows)] == [3, 4, 1, 2]
    ident = Column("id", number=True)
    assert [r["id"] for r in Table([ident], sort=ident).sorted(rows[::-1])] == [1, 2, 3, 4]


def test_sort_orders_the_json_records_too():
    ids = [p["id"] for p in run_cli("-f", F, "pools", "--sort", "inflight", "--json").json()]
    inflight = {p["id"]: p["inflight"] for p in run_cli("-f", F, "pools", "--json").json()}
    assert [inflight[i] for i in ids] == sorted(inflight.values(), reverse=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _on_terminal(*args, columns="80", no_color=None, monkeypatch):
    monkeypatch.setenv("COLUMNS", columns)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    screen = _Terminal()
    with redirect_stdout(screen), redirect_stderr(io.StringIO()):
        main(["-f", F, *args])
    return screen.getvalue()


def test_piped_tables_are_full_width_and_plain(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli("-f", F, "leaks", "--pool", "10").out
    assert max(len(line) for line in out.splitlines()) > 80
    assert "\x1b[" not in out and "…" not in out


def test_on_a_terminal_free_text_is_cut_to_fit(monkeypatch):
    out = ANSI.sub("", _on_terminal("leaks", "--pool", "10", monkeypatch=monkeypatch))
    _, _, rows = table_lines(out)
    assert all(len(row) <= 80 for row in rows)
    assert any(row.endswith("…") for row in rows)
    # What names an object is never cut.
    assert "0xffffea0000180e40" in out


def test_on_a_terminal_leaked_and_detached_are_in_colour(monkeypatch):
    out = _on_terminal("leaks", "--pool", "10", monkeypatch=monkeypatch)
    assert out.count("\x1b[31mleaked\x1b[0m") == 3
    out = _on_terminal("pools", monkeypatch=monkeypatch)
    assert "\x1b[33minvisible,detached\x1b[0m" in out


@pytest.mark.parametrize("no_color", ["1", "yes"])
def test_no_color_turns_colour_off(monkeypatch, no_color):
    out = _on_terminal("leaks", "--pool", "10", no_color=no_color, monkeypatch=monkeypatch)
    assert "\x1b[" not in out and "leaked" in out


def test_an_empty_no_color_does_not(monkeypatch):
    # https://no-color.org: set to any non-empty value.
    out = _on_terminal("leaks", "--pool", "10", no_color="", monkeypatch=monkeypatch)
    assert "\x1b[31m" in out

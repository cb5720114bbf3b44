"""
``--drgn``: every command prints plain drgn code, and that code, run on the
fixture's Program, prints the rows the command reports (the keys of
``netmem_probe.snippets.KEYS``, same values).
"""

import ast
import functools
import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest
from conftest import FIXTURE_NAMES, FIXTURES, expected, run_cli
from invocations import invocations

from netmem_probe.commands import COMMANDS
from netmem_probe.fake.faults import FaultyMemory
from netmem_probe.fake.world import World
from netmem_probe.report.table import _Columns
from netmem_probe.snippets import COUNT_KEYS, HOLDER_KEYS, KEYS, LEFT_OUT

MIXED = [
    "linux-6.12-mixed",
    "linux-6.16-mixed",
    "linux-6.18-mixed",
    "linux-7.1-rc-mixed",
    "linux-7.3-mixed",
]
# The searches of holders and leaks are the slow part: the kernels the task
# names (6.16 sits between 6.12 and 6.18 in every adaptation they make).
SEARCHED = [name for name in MIXED if name != "linux-6.16-mixed"]
MISSING = object()


def snippet(prog, *args: str) -> str:
    """The code ``netmem-probe ARGS --drgn`` prints for ``prog``."""
    result = run_cli(*args, "--drgn", program=prog)
    assert result.code == 0, result
    assert result.err == "", result
    return result.out


def run_snippet(code: str, prog) -> List[Dict[str, Any]]:
    """Rows a snippet prints, executed the way drgn runs a script: ``prog`` defined."""
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {"prog": prog, "__name__": "__main__"})
    return [json.loads(line) for line in out.getvalue().splitlines()]


def project(rows: List[Dict[str, Any]], keys) -> List[Dict[str, Any]]:
    """Rows reduced to ``keys``; a key a row leaves out stays left out; the
    references in a ``holders`` list reduced to HOLDER_KEYS."""
    out = []
    for row in rows:
        reduced = {k: row.get(k, MISSING) for k in keys}
        if isinstance(reduced.get("holders"), list):
            reduced["holders"] = project(reduced["holders"], HOLDER_KEYS)
        out.append(reduced)
    return out


def compare(name: str, fixture_program, command: List[str], keys) -> List[Dict[str, Any]]:
    """Run the command's --json and its snippet; assert the same rows; return them."""
    prog = fixture_program(name)
    result = run_cli(*command, "--json", program=prog)
    assert result.code in (0, 1), result
    text = result.out.strip()
    mine = (
        json.loads(text)
        if text.startswith("[") or text.startswith("{\n")
        else [json.loads(line) for line in text.splitlines()]
    )
    mine = mine if isinstance(mine, list) else [mine]
    theirs = run_snippet(snippet(prog, *command), prog)
    for row in theirs:
        assert set(row) <= set(keys), set(row) - set(keys)
    assert project(theirs, keys) == project(mine, keys)
    return mine


@pytest.mark.parametrize("name", MIXED)
@pytest.mark.parametrize(
    "args",
    [[], ["--state", "detached", "--sort", "detach-age"], ["--netdev", "eth2", "--inflight-only"]],
    ids=["all", "detached", "netdev"],
)
def test_pools_snippet_prints_the_pools(name, args, fixture_program):
    rows = compare(name, fixture_program, ["pools", *args], KEYS["pools"])
    assert rows


@pytest.mark.parametrize("name", MIXED)
def test_pool_snippet_prints_the_breakdown_and_stats(name, fixture_program):
    for pool in expected(name)["pools"]:
        if pool["inflight"] and pool["state"] != "invisible":
            compare(name, fixture_program, ["pool", str(pool["id"])], KEYS["pool"])
    detached = next(p for p in expected(name)["pools"] if p["detached"])
    compare(name, fixture_program, ["pool", detached["address"]], KEYS["pool"])


def normal(row: Dict[str, Any]) -> Dict[str, Any]:
    """A decode row as compared: null keys dropped; of a row with an error,
    the value, its kind and that it has an error."""
    if row.get("error"):
        return {"netmem": row["netmem"], "kind": row["kind"], "error": True}
    return {k: v for k, v in row.items() if v is not None and k in KEYS["decode"]}


@pytest.mark.parametrize("name", MIXED)
def test_decode_snippet_decodes_pages_niovs_and_bad_values(name, fixture_program):
    values = [d["netmem"] for d in expected(name)["decode"] + expected(name)["decode-niovs"]]
    prog = fixture_program(name)
    mine = run_cli("decode", *values, "--json", program=prog).json()
    theirs = run_snippet(snippet(prog, "decode", *values), prog)
    assert [normal(r) for r in theirs] == [normal(r) for r in mine]
    assert {r["kind"] for r in mine} == {"page", "net_iov"}
    assert any(r["error"] for r in mine) and not all(r["error"] for r in mine)


@pytest.mark.parametrize("name", [*MIXED, "broken-netmem-desc"])
def test_layout_snippet_evaluates_the_asserts_of_this_kernel(name, fixture_program):
    rows = compare(name, fixture_program, ["layout"], KEYS["layout"])
    assert len(rows) == expected(name)["layout"]["asserts"]
    assert sum(not r["ok"] for r in rows) == expected(name)["layout"]["mismatches"]


@pytest.mark.parametrize("name", MIXED)
def test_pages_snippet_finds_the_pages_the_scan_finds(name, fixture_program):
    assert compare(name, fixture_program, ["pages"], KEYS["pages"])
    detached = [p for p in expected(name)["pools"] if p["detached"] and p["inflight"]]
    compare(
        name,
        fixture_program,
        ["pages", "--pool", str(detached[-1]["id"]), "--pool", "3"],
        KEYS["pages"],
    )
    rows = compare(name, fixture_program, ["pages", "--all-pools", "--count"], COUNT_KEYS)
    assert [r["id"] for r in rows] == sorted(p["id"] for p in expected(name)["pools"])


@pytest.mark.parametrize("name", SEARCHED)
def test_holders_snippet_finds_and_names_every_reference(name, fixture_program):
    values = [h["netmem"] for h in expected(name)["holders"]]
    prog = fixture_program(name)
    mine = run_cli("holders", *values, "--json", program=prog).json()
    theirs = run_snippet(snippet(prog, "holders", *values), prog)
    assert project(theirs, KEYS["holders"]) == project(mine, KEYS["holders"])
    references = [h for rec in mine for h in rec["holders"]]
    assert {"skb-frag", "skb-head", "pool-cache", "pool-ring"} <= {h["kind"] for h in references}
    assert any(h["queue"] == "backlog" for h in references)


@pytest.mark.parametrize("name", SEARCHED)
def test_leaks_snippet_gives_every_verdict(name, fixture_program):
    rows = compare(name, fixture_program, ["leaks"], KEYS["leaks"])
    assert {r["verdict"] for r in rows} == {"parked", "cached", "leaked"}
    assert {r["kind"] for r in rows} == {"page", "net_iov"}


@pytest.mark.parametrize("name", MIXED)
def test_providers_snippet_counts_niov_states(name, fixture_program):
    rows = compare(name, fixture_program, ["providers"], KEYS["providers"])
    assert {r["kind"] for r in rows} >= {"dmabuf"}


@pytest.mark.parametrize("name", MIXED)
def test_niovs_snippet_lists_every_niov(name, fixture_program):
    rows = compare(name, fixture_program, ["niovs"], KEYS["niovs"])
    assert len({r["state"] for r in rows}) >= 3
    compare(
        name, fixture_program, ["niovs", "--area", "dmabuf:1", "--state", "stack"], KEYS["niovs"]
    )
    compare(name, fixture_program, ["niovs", "--area", rows[-1]["area"]], KEYS["niovs"])
    areas = run_cli("providers", "--json", program=fixture_program(name)).json()
    compare(name, fixture_program, ["niovs", "--area", areas[-1]["address"]], KEYS["niovs"])
    compare(
        name, fixture_program, ["niovs", "--pool", str(rows[-1]["pool-id"] or 12)], KEYS["niovs"]
    )


def _invocation(command) -> List[str]:
    """A command line for any command: the fixture's pool 10, a leaked page."""
    args = {"pool": ["10"], "decode": ["0xffffea0000180e80"], "holders": ["0xffffea0000180e80"]}
    return [command.name, *args.get(command.name, [])]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_prints_drgn_code_that_needs_only_drgn(command, fixture_program):
    code = snippet(fixture_program("linux-7.3-mixed"), *_invocation(command))
    modules: Set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module, "a snippet imports nothing relative"
            modules.add(node.module)
    assert modules and all(
        m in ("json", "sys", "drgn") or m.startswith("drgn.helpers.") for m in modules
    ), modules
    assert code.startswith(f"# netmem-probe {command.name}")


def test_a_snippet_runs_as_a_drgn_script(tmp_path, fixture_program):
    fixture = FIXTURES / "linux-7.3-mixed"
    script = tmp_path / "leaks.py"
    script.write_text(snippet(fixture_program("linux-7.3-mixed"), "leaks", "--pool", "10"))
    drgn = Path(sys.executable).parent / "drgn"
    result = subprocess.run(
        [
            str(drgn),
            "-q",
            "--no-default-symbols",
            "-c",
            str(fixture / "vmcore"),
            "-s",
            str(fixture / "types.elf"),
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    mine = run_cli("-f", str(fixture), "leaks", "--pool", "10", "--json")
    assert project(rows, KEYS["leaks"]) == project(
        [json.loads(line) for line in mine.out.splitlines()], KEYS["leaks"]
    )


def test_drgn_code_honours_the_arguments_and_refuses_bad_ones(fixture_program):
    prog = fixture_program("linux-7.3-mixed")
    assert "xa_load(PAGE_POOLS, 10)" in snippet(prog, "pool", "10")
    assert '"detached"' in snippet(prog, "pools", "--state", "detached")
    for args in (
        ["pool", "ten"],
        ["decode", "0xzz"],
        ["holders", "-1"],
        ["pages", "--pool", "3", "--all-pools"],
        ["niovs", "--area", "x:y"],
    ):
        result = run_cli(*args, "--drgn", program=prog)
        assert result.code == 2 and result.out == "", result
        assert result.err.startswith("netmem-probe: error: ") and result.err.count("\n") == 1


@functools.lru_cache(maxsize=None)
def _bare_world() -> World:
    world = World("linux-7.3")
    world.commit()
    return world


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_making_drgn_code_reads_no_memory(command):
    # The code depends on the target's types and the arguments alone, so a
    # corrupt or unreadable dump still gets it.
    prog = FaultyMemory(_bare_world(), max_reads=0).program()
    result = run_cli(*_invocation(command), "--drgn", program=prog)
    assert result.code == 0, result


def records(command: str, out: str) -> List[Dict[str, Any]]:
    """The records of a command's --json output, as its --drgn script prints them:
    an array's elements, a single object, or JSON Lines."""
    text = out.strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]
    return value if isinstance(value, list) else [value]


def same_records(command: str, theirs, mine, keys) -> bool:
    """Whether a script printed the command's records (a decode error's text
    may be worded differently: both must have one)."""
    if command == "decode":
        mine = [dict(r, error=bool(r["error"])) for r in mine]
        theirs = [dict(r, error=bool(r["error"])) for r in theirs]
    assert project(theirs, keys) == project(mine, keys)
    return True


def sort_columns(command: str) -> List[str]:
    """The columns ``--sort`` takes for a command (none if it has no --sort)."""
    command_ = next(c for c in COMMANDS if c.name == command)
    for param in command_.params:
        if "--sort" in getattr(param, "opts", ()):
            assert isinstance(param.type, _Columns), param
            return [column.name for column in param.type.columns]
    return []


def script_keys(args: List[str]):
    """The keys a script prints for these arguments (of each reference, for holders)."""
    if args[0] == "holders":
        return HOLDER_KEYS
    return COUNT_KEYS if "--count" in args else KEYS[args[0]]


def check_script(prog, args: List[str]) -> None:
    """The script of ``args`` prints the records of ``args --json``, in its order."""
    command = args[0]
    keys = COUNT_KEYS if "--count" in args else KEYS[command]
    result = run_cli(*args, "--json", program=prog)
    assert result.code in (0, 1), (args, result)
    mine = records(command, result.out)
    theirs = run_snippet(snippet(prog, *args), prog)
    for row in theirs:
        assert set(row) <= set(keys), (args, set(row) - set(keys))
    assert same_records(command, theirs, mine, keys), args


def check_sorted_script(prog, args: List[str], column: str) -> bool:
    """
    With ``--sort column``, the script prints the records of --json in the
    same order, or, for a column the script does not print, --drgn is a
    one-line usage error saying so.  Whether the script could sort.
    """
    sorted_args = [*args, "--sort", column]
    result = run_cli(*sorted_args, "--drgn", program=prog)
    if result.code == 2:
        assert "cannot sort by it" in result.err and result.err.count("\n") == 1, result
        assert column not in script_keys(args), (sorted_args, result.err)
        return False
    check_script(prog, sorted_args)
    return True


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_script_prints_the_records_of_json_on_every_fixture(name, fixture_program):
    prog = fixture_program(name)
    registry = any(p["id"] is not None for p in expected(name).get("pools", []))
    for i, args in enumerate(invocations(name)):
        command = args[0]
        if not registry and command != "layout":
            # Before Linux 6.8 there is no page_pools registry for a script to
            # walk: --drgn says so (usage error), it prints no wrong script.
            result = run_cli(*args, "--drgn", program=prog)
            assert result.code == 2 and "registry" in result.err, (args, result)
            continue
        check_script(prog, args)
        # --sort too: one column each time, a different one on each fixture
        # (test_every_sort_column_... takes them all on one).
        columns = [c for c in sort_columns(command) if c in script_keys(args)]
        if columns and "--sort" not in args:
            column = columns[(i + FIXTURE_NAMES.index(name)) % len(columns)]
            assert check_sorted_script(prog, args, column), (args, column)


@pytest.mark.parametrize("name", ["linux-7.3-mixed"])
def test_every_sort_column_orders_the_scripts_records_as_json(name, fixture_program):
    # Every column of every table: the script sorts as --json does, or the
    # column is one the script does not print and --drgn says so.
    prog = fixture_program(name)
    seen: Dict[Tuple[str, str], bool] = {}
    for args in invocations(name):
        for column in sort_columns(args[0]):
            if "--sort" not in args:
                seen[args[0], column] = check_sorted_script(prog, args, column) or seen.get(
                    (args[0], column), False
                )
    # The keys a script prints can all be sorted by.
    assert all(
        seen[command, column]
        for command, column in seen
        if column in (HOLDER_KEYS if command == "holders" else KEYS[command])
    ), seen


def _first_page(prog) -> str:
    """A page-pool page of the fixture, or a pool's address (a direct-map address)."""
    lines = run_cli("pages", "--all-pools", "--json", program=prog).out.splitlines()
    if lines:
        return json.loads(lines[0])["page"]
    return run_cli("pools", "--json", program=prog).json()[0]["address"]


# Arguments the command takes whose scripts once raised: nothing to search
# for (a page nothing references, no detached pool, an unknown pool), and
# netmem_refs in unmapped memory.
SCRIPT_CRASHES = [
    ("linux-7.3-mixed", ["holders", "0xffffea0000180ec0"]),
    ("linux-7.3-mixed", ["leaks", "--pool", "3"]),
    ("linux-7.3-mixed", ["leaks", "--pool", "999"]),
    ("linux-7.3-mixed", ["decode", "0x1"]),
    ("linux-7.3-mixed", ["decode", "0xffffffffffffffff"]),
    ("linux-7.3-many-pools", ["leaks"]),
    ("linux-7.3-many-pools", ["holders", "PAGE"]),
    ("broken-netmem-desc", ["leaks"]),
    ("broken-netmem-desc", ["holders", "PAGE"]),
]


@pytest.mark.parametrize(
    "name,args", SCRIPT_CRASHES, ids=lambda x: x if isinstance(x, str) else " ".join(x)
)
def test_scripts_run_for_arguments_that_find_nothing(name, args, fixture_program):
    prog = fixture_program(name)
    args = [_first_page(prog) if a == "PAGE" else a for a in args]
    result = run_cli(*args, "--json", program=prog)
    theirs = run_snippet(snippet(prog, *args), prog)
    assert same_records(args[0], theirs, records(args[0], result.out), KEYS[args[0]])


@pytest.mark.parametrize("name", ["linux-7.3-mixed", "linux-6.12-mixed"])
def test_a_script_leaves_out_only_the_keys_listed(name, fixture_program):
    prog = fixture_program(name)
    seen: Dict[str, set] = {}
    for args in invocations(name):
        command = args[0] + (" --count" if "--count" in args else "")
        for rec in records(args[0], run_cli(*args, "--json", program=prog).out):
            seen.setdefault(command, set()).update(rec)
            if args[0] == "holders":
                for ref in rec["holders"]:
                    seen.setdefault("holders references", set()).update(ref)
    for command, keys in seen.items():
        special = {"pages --count": COUNT_KEYS, "holders references": HOLDER_KEYS}
        kept = special[command] if command in special else KEYS[command]
        assert keys - set(kept) == set(LEFT_OUT.get(command, ())), command


@pytest.fixture(scope="session")
def fixture_btf(tmp_path_factory):
    """name -> the BTF pahole encodes from a fixture's DWARF, as a kernel build
    does: types, and no variables but per-CPU ones."""
    made: Dict[str, str] = {}

    def make(name: str) -> str:
        if name not in made:
            pahole = shutil.which("pahole")
            if pahole is None:
                pytest.fail("pahole is required for this test (apt-get install dwarves)")
            elf = tmp_path_factory.mktemp(name) / "types.elf"
            shutil.copyfile(FIXTURES / name / "types.elf", elf)
            subprocess.run([pahole, "-J", str(elf)], check=True, capture_output=True)
            made[name] = str(elf)
        return made[name]

    return make


REGISTRY_FIXTURES = [
    name
    for name in FIXTURE_NAMES
    if any(p["id"] is not None for p in expected(name).get("pools", []))
]


@pytest.mark.parametrize("name", REGISTRY_FIXTURES)
def test_scripts_made_from_btf_alone_print_the_records_of_json(name, fixture_program, fixture_btf):
    # --btf FILE and no core: the script is made from types alone and finds the
    # kernel's variables (page_pools, the providers' ops, the bindings
    # registry, io_uring's file operations) when it runs, as a DWARF-made one.
    prog = fixture_program(name)
    btf = fixture_btf(name)
    for args in invocations(name):
        result = run_cli("--btf", btf, *args, "--drgn")
        assert result.code == 0, (args, result)
        if result.out == snippet(prog, *args):
            continue  # the same script: its records are compared above
        keys = COUNT_KEYS if "--count" in args else KEYS[args[0]]
        mine = records(args[0], run_cli(*args, "--json", program=prog).out)
        theirs = run_snippet(result.out, prog)
        assert same_records(args[0], theirs, mine, keys), args


@pytest.mark.parametrize("args", [["check"], ["export", "--textfile", "-"], ["triage", "DIR"]])
def test_fleet_commands_refuse_drgn_saying_why(args, fixture_program):
    # check, export and triage combine other commands' records (or serve
    # metrics, or run many dumps): no script of their own, and --drgn says so.
    args = [str(FIXTURES) if a == "DIR" else a for a in args]
    result = run_cli(*args, "--drgn", program=fixture_program("linux-7.3-mixed"))
    assert result.code == 2 and result.out == "", result
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"netmem-probe: error: --drgn: {args[0]} has no drgn script: ")
    assert "--drgn print" in result.err or "see layout, pools and leaks --drgn" in result.err

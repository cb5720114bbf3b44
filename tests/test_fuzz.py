"""
Fuzzing: every command on corrupted fake kernels.

Each bundled fixture's world is rebuilt from its scenario and committed once;
each example corrupts it through a :class:`FaultyMemory` overlay (random
bytes, absurd values in counts and pointers, pointers that make cycles, holes
of unmapped memory), opens a fresh Program on it (live or not) and runs one
command with arguments drawn from the command's own click parameters and the
world's truth.  Whatever the corruption, the command must return (no
exception escapes, not even into the CLI's catch-all), stay within a read
and time budget (no hang), and exit 0, 1 or 4 — 4 only with the skipped
objects summarised on stderr.  A usage error (2) is accepted if the same
arguments are one on the uncorrupted world too, or if the corruption removed
what they name without a trace (``pools`` on the same memory skips nothing).

``NETMEM_PROBE_FUZZ_EXAMPLES`` sets the total number of examples over all
commands (default 300, the quick profile of the normal suite); the long run
is ``NETMEM_PROBE_FUZZ_EXAMPLES=10000 .venv/bin/pytest -q tests/test_fuzz.py``.
"""

import json
import os
import signal
import struct
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Tuple

import click
import drgn
import pytest
from conftest import FIXTURE_NAMES, FIXTURES, run_cli
from drgn import TypeKind
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from netmem_probe.commands import COMMANDS, FLEET_COMMANDS
from netmem_probe.fake import scenarios
from netmem_probe.fake.elfcore import write_core
from netmem_probe.fake.faults import BudgetExceeded, FaultyMemory
from netmem_probe.fake.memory import FakeMemory, Region
from netmem_probe.fake.pools import PGTY_NETPP, PP_SIGNATURE
from netmem_probe.fake.world import World

TOTAL_EXAMPLES = int(os.environ.get("NETMEM_PROBE_FUZZ_EXAMPLES", "300"))
LONG = TOTAL_EXAMPLES > 1000
# Every command that reads one target; triage (over dumps, a process each)
# has its own test below, on the same corruptions written as a dump.
TARGET_COMMANDS = COMMANDS + [c for c in FLEET_COMMANDS if c.name != "triage"]
TRIAGE = next(c for c in FLEET_COMMANDS if c.name == "triage")
PER_COMMAND = max(10, TOTAL_EXAMPLES // len(TARGET_COMMANDS))
# A clean run of any command reads at most a few thousand times; a corrupt
# kernel may cost retries and skipped objects, but nothing near this.
MAX_READS = 200_000
MAX_BYTES = 1 << 30
SECONDS_PER_RUN = 60

FUZZ_SETTINGS = settings(
    max_examples=PER_COMMAND,
    deadline=None,
    derandomize=not LONG,  # the normal suite always runs the same examples
    database=None if not LONG else settings().database,
    suppress_health_check=list(HealthCheck),
)

# Members whose corruption the walkers and readers must bound: counts and
# indexes that size reads and loops, and the links of every walked structure.
INTERESTING = (
    "count",
    "size",
    "producer",
    "consumer_head",
    "consumer_tail",
    "queue",
    "num_niovs",
    "niovs",
    "pages_state_hold_cnt",
    "pages_state_release_cnt",
    "order",
    "pool_size",
    "id",
    "shift",
    "offset",
    "parent",
    "slots",
    "next",
    "prev",
    "pprev",
    "first",
    "xa_head",
    "pp",
    "pp_magic",
    "owner",
    "mp_priv",
    "mp_ops",
    "netdev",
    "napi",
    "dev",
    "net",
    "recycle_stats",
    "detach_time",
    "user_refs",
    "niov_shift",
    "page_type",
)


class Leaf(NamedTuple):
    path: str
    offset: int
    size: int
    pointer: bool


def _leaves(type_: drgn.Type, path: str = "", offset: int = 0) -> Iterator[Leaf]:
    """The scalar members of a type (a few elements of each array)."""
    type_ = type_.unaliased()
    kind = type_.kind
    if kind in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.CLASS):
        for member in type_.members:
            name = member.name or ""
            sub = f"{path}.{name}" if path and name else (name or path)
            if member.bit_field_size:
                size = (member.bit_offset % 8 + member.bit_field_size + 7) // 8
                yield Leaf(sub, offset + member.bit_offset // 8, size, False)
                continue
            yield from _leaves(member.type, sub, offset + member.bit_offset // 8)
    elif kind == TypeKind.ARRAY:
        length = type_.length or 0
        try:
            step = drgn.sizeof(type_.type)
        except ValueError:
            return
        for i in sorted({0, 1, length - 2, length - 1} & set(range(length))):
            yield from _leaves(type_.type, f"{path}[{i}]", offset + i * step)
    elif kind == TypeKind.POINTER:
        yield Leaf(path, offset, 8, True)
    elif kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.ENUM):
        yield Leaf(path, offset, drgn.sizeof(type_), False)


def _interesting(leaf: Leaf) -> bool:
    last = leaf.path.rsplit(".", 1)[-1].split("[", 1)[0]
    return last in INTERESTING


class Subject:
    """A committed fixture world and what the fuzzer picks from."""

    def __repr__(self) -> str:
        return self.name

    def __init__(self, name: str) -> None:
        self.name = name
        self.world: World = scenarios.build(name)[0]
        self.world.commit()
        self.objects: List[Tuple[int, int, Tuple[Leaf, ...]]] = []  # (address, size, leaves)
        leaves_of: Dict[str, Tuple[Leaf, ...]] = {}
        for obj in self.world.objects:
            key = obj.type.type_name()
            if key not in leaves_of:
                leaves_of[key] = tuple(_leaves(obj.type))
            if leaves_of[key]:
                self.objects.append((obj.addr, drgn.sizeof(obj.type), leaves_of[key]))
        self.objects.sort()
        fm = FaultyMemory(self.world)
        self.pointers = sorted(
            {
                fm.peek_word(addr + leaf.offset)
                for addr, _, leaves in self.objects
                for leaf in leaves
                if leaf.pointer
            }
            - {0}
        )
        self.truth = self._truth()

    def _truth(self) -> Dict[str, List[str]]:
        w = self.world
        pools = sorted(w.pools, key=lambda p: (p.id or 0, p.obj.addr))
        netmems = [hex(page.netmem) for p in pools for page in p.pages[:3]]
        for obj in w.objects:  # net_iovs of memory providers, if the world has any
            if (
                obj.type.unaliased_kind() == TypeKind.ARRAY
                and obj.type.unaliased().type.type_name() == "struct net_iov"
            ):
                size = drgn.sizeof(obj.type.unaliased().type)
                netmems += [hex(obj.addr + i * size | 1) for i in (0, 1)]
        names = sorted({dev.name for ns in w.namespaces for dev in ns.netdevs})
        providers = w.expected.get("providers", [])
        ring = w.expected.get("providers-ring", {}).get("ring")
        return {
            "ids": [str(p.id) for p in pools if p.id is not None] or ["1"],
            "addresses": [hex(p.obj.addr) for p in pools],
            "netmems": netmems or ["0x1"],
            "names": names or ["lo"],
            "areas": [p["area"] for p in providers]
            + [p["address"] for p in providers[:1]]
            + ["dmabuf:99"],
            "rings": [ring] if ring else [hex(pools[0].obj.addr)],
        }


@lru_cache(maxsize=None)
def subject(name: str) -> Subject:
    return Subject(name)


# -- corruption ---------------------------------------------------------------

WORD_VALUES = [
    0,
    1,
    8,
    64,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    1 << 16,
    1 << 20,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    0x7FFFFFFFFFFFFFFF,
    (1 << 64) - 1,
]
BAD_POINTERS = [
    1,
    0x1000,
    0xDEAD000000000100,
    0xDEAD000000000122,
    0xFFFF888000000000,
    0xFFFFEA0000000000,
    0xFFFFFFFFFFFFF000,
    0x00007F0000000000,
    (1 << 64) - 1,
]


@st.composite
def corruption(draw, s: Subject):
    """
    One corruption, applied to a FaultyMemory later: (description, apply).
    Most are there from the start (a corrupt dump); some strike only after
    a number of reads (a live kernel changing under the reader).
    """
    description, apply = draw(_damage(s))
    if draw(st.integers(0, 4)):
        return description, apply
    after = draw(st.integers(1, 300))

    def later(fm: FaultyMemory) -> None:
        fm.on_read.append(lambda fm, *_: apply(fm) if fm.reads == after else None)

    return f"after {after} reads: {description}", later


@st.composite
def _damage(draw, s: Subject):
    kind = draw(st.sampled_from(["field", "field", "field", "bytes", "hole", "forged-page"]))
    if kind == "forged-page":
        # A struct page anywhere in the memmap that claims a pool: the page
        # scanners must not trust the signature alone.
        pfn = draw(st.integers(0, s.world.memmap.size // 64 - 1))
        page = s.world.page_struct_addr(pfn)
        pool = draw(st.sampled_from(s.truth["addresses"] + ["0x0", "0xdead000000000100"]))
        return f"forged pp page {page:#x} -> {pool}", lambda fm: _forge(fm, s, page, int(pool, 16))
    addr, size, leaves = draw(st.sampled_from(s.objects))
    if kind == "hole":
        start = draw(st.sampled_from([0, 0, 8, size // 2, max(size - 8, 0)]))
        length = draw(st.sampled_from([8, 64, size, 4096]))
        return f"unmap {addr + start:#x}+{length:#x}", lambda fm: fm.unmap(addr + start, length)
    if kind == "bytes":
        offset = draw(st.integers(0, max(size - 1, 0)))
        data = draw(st.binary(min_size=1, max_size=32))
        return (
            f"bytes {addr + offset:#x} = {data.hex()}",
            lambda fm: fm.write(addr + offset, data),
        )
    interesting = [leaf for leaf in leaves if _interesting(leaf)]
    leaf = draw(st.sampled_from(interesting if interesting and draw(st.booleans()) else leaves))
    where = addr + leaf.offset
    if leaf.pointer:
        others = [a for a, _, lv in s.objects if lv is leaves and a != addr]
        choices = [
            st.sampled_from(BAD_POINTERS),
            st.sampled_from(s.pointers or [0]),
            st.just(0),
            st.just(where),
            st.just(addr),
            st.integers(0, (1 << 64) - 1),
        ]
        if others:
            # the same member of a sibling: lists cross and cycle
            choices.append(st.sampled_from(others).map(lambda a: a + leaf.offset))
        value = draw(st.one_of(choices))
        if draw(st.integers(0, 9)) == 0:
            value += draw(st.sampled_from([-64, -8, -2, 1, 2, 8, 64]))
    else:
        value = draw(
            st.one_of(
                st.sampled_from(WORD_VALUES),
                st.integers(0, (1 << 64) - 1),
                st.integers(-3, 3).map(lambda d: ("delta", d)),
            )
        )
    return (
        f"{leaf.path or 'value'} at {where:#x} = {value}",
        lambda fm: _set(fm, where, leaf.size, value),
    )


def _forge(fm: FaultyMemory, s: Subject, page: int, pool: int) -> None:
    w = s.world
    page_type = w.type("struct page")
    if w.netpp_page_type:
        fm.write_word(page + drgn.offsetof(page_type, "page_type"), PGTY_NETPP << 24, 4)
    else:
        fm.write_word(page + drgn.offsetof(page_type, "pp_magic"), PP_SIGNATURE)
    fm.write_word(page + drgn.offsetof(page_type, "pp"), pool)


def _set(fm: FaultyMemory, where: int, size: int, value: Any) -> None:
    if isinstance(value, tuple):  # a small step from what is there
        value = fm.peek_word(where, size) + value[1]
    fm.write_word(where, value, size)


# -- arguments from a command's own parameters --------------------------------


def _values_for(name: str, s: Subject) -> st.SearchStrategy:
    name = name.upper()
    t = s.truth
    if (
        "AREA" not in name
        and "RING" not in name
        and ("NETMEM" in name or "PAGE" in name or "ADDR" in name)
    ):
        return st.sampled_from(t["netmems"] + t["addresses"] + ["0x0"])
    if "POOL" in name or name == "ID":
        return st.sampled_from(t["ids"] + t["addresses"][:2])
    if "NETDEV" in name or "NAME" in name or "DEV" in name:
        return st.sampled_from(t["names"])
    if "AREA" in name:
        return st.sampled_from(t["areas"])
    if "RING" in name:
        return st.sampled_from(t["rings"])
    return st.sampled_from(t["ids"] + t["addresses"] + t["netmems"] + t["names"])


@st.composite
def command_args(draw, command: click.Command, s: Subject, live: bool) -> List[str]:
    chosen: Dict[str, List[str]] = {}  # option name -> its tokens, in order
    positional: List[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            key = f"{param.metavar or ''} {param.name}"
            count = param.nargs if param.nargs > 0 else draw(st.integers(1, 3))
            positional += [draw(_values_for(key, s)) for _ in range(count)]
            continue
        if (
            not isinstance(param, click.Option)
            or param.hidden
            or param.is_eager
            or isinstance(param.type, (click.Path, click.File))
            or param.name == "listen"  # a server that runs until stopped
        ):
            continue
        if param.name == "textfile":
            chosen[param.name] = [param.opts[0], "-"]  # export's one reading, to stdout
            continue
        if not param.required and not draw(st.booleans()):
            continue
        if param.is_flag:
            if param.secondary_opts:
                chosen[param.name] = [draw(st.sampled_from(param.opts + param.secondary_opts))]
            elif draw(st.booleans()):
                chosen[param.name] = [param.opts[0]]
            continue
        tokens: List[str] = []
        for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
            if isinstance(param.type, click.Choice):
                value = draw(st.sampled_from(list(param.type.choices)))
            elif isinstance(param.type, (click.types.IntParamType, click.IntRange)):
                least = getattr(param.type, "min", None) or 0
                value = draw(
                    st.sampled_from(
                        [v for v in s.truth["ids"] + ["0", "1", "64"] if int(v) >= least]
                    )
                )
            elif isinstance(param.type, (click.types.FloatParamType, click.FloatRange)):
                value = draw(st.sampled_from(["0.001", "0.01"]))  # intervals
            else:
                value = draw(_values_for(f"{param.metavar or ''} {param.name}", s))
            tokens += [param.opts[0], str(value)]
        chosen[param.name] = tokens
    # A refreshing view (pools --watch) needs a live kernel and runs until
    # Ctrl-C unless told how often; other uses are usage errors whatever the
    # memory, which the fuzzer would only throw away.
    names = {p.name for p in command.params}
    if "watch" in chosen and not live:
        del chosen["watch"]
    if "iterations" in names:
        if "watch" not in chosen:
            chosen.pop("iterations", None)
        elif "iterations" not in chosen:
            opt = next(p for p in command.params if p.name == "iterations").opts[0]
            chosen["iterations"] = [opt, str(draw(st.integers(1, 3)))]
    assert command.name is not None  # every command is registered by name
    args = [command.name] + [token for tokens in chosen.values() for token in tokens]
    return args + (["--"] + positional if positional else [])


def survey_args(command: click.Command, args: List[str]) -> List[str]:
    """The command that reads what ``args`` name and reports if any was unreadable."""
    netmem_args = any(
        isinstance(p, click.Argument) and "NETMEM" in f"{p.metavar} {p.name}".upper()
        for p in command.params
    )
    if netmem_args and "--" in args:
        return ["decode", "--json"] + args[args.index("--") + 1 :]
    return ["pools", "--json"]


# -- running ------------------------------------------------------------------


@contextmanager
def time_budget(seconds: int):
    """Interrupt a run that computes without reading (a loop over a bogus count)."""

    def expire(signum, frame):
        raise BudgetExceeded(f"more than {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_on(s: Subject, args: List[str], corruptions, live: bool):
    fm = FaultyMemory(s.world, max_reads=MAX_READS, max_bytes=MAX_BYTES)
    for _, apply in corruptions:
        apply(fm)
    try:
        with time_budget(SECONDS_PER_RUN):
            result = run_cli(*args, program=fm.program(live=live))
    except BudgetExceeded as e:
        # An ordinary failure from here on, so that hypothesis shrinks it.
        raise AssertionError(f"{' '.join(args)} did not end: {e}") from None
    return result, fm


def check(result, args: List[str]) -> None:
    assert "Traceback" not in result.err, result.err
    assert "--debug for the traceback" not in result.err, f"exception escaped: {result.err}"
    assert result.code in (0, 1, 4), result
    if result.code == 4:
        assert "netmem-probe: warning:" in result.err, result.err
    # (--drgn prints the drgn program that would compute the answer instead)
    if "--json" in args and "--drgn" not in args and result.out.strip():
        try:
            json.loads(result.out)
        except ValueError:  # JSON Lines
            for line in result.out.splitlines():
                json.loads(line)


@pytest.mark.parametrize("command", TARGET_COMMANDS, ids=lambda c: c.name)
@FUZZ_SETTINGS
@given(data=st.data())
def test_commands_survive_corrupt_kernels(command, data):
    s = subject(data.draw(st.sampled_from(FIXTURE_NAMES), label="fixture"))
    corruptions = data.draw(st.lists(corruption(s), min_size=1, max_size=6), label="corruptions")
    live = data.draw(st.integers(0, 3), label="live") == 0
    args = data.draw(command_args(command, s, live), label="args")
    for description, _ in corruptions:
        note(description)
    result, fm = run_on(s, args, corruptions, live)
    note(f"{result.code} after {fm.reads} reads: {result.err}")
    event(f"exit {result.code}")  # shown by --hypothesis-show-statistics
    if result.code == 2:
        if run_on(s, args, [], live)[0].code == 2:
            assume(False)  # the arguments are wrong whatever the memory
        # The corruption made what the arguments name vanish.  That is a
        # usage error only if nothing it depends on was skipped: `decode`
        # reads what a value names, `pools` every pool a lookup by id could
        # have found it among.
        survey, _ = run_on(s, survey_args(command, args), corruptions, live)
        assert survey.code != 4, f"'not found' although objects were skipped: {result.err}"
        return
    check(result, args)


def write_dump(s: Subject, fm: FaultyMemory, directory: Path) -> Path:
    """
    The world as ``fm`` shows it, written as a fixture directory: a vmcore of
    the corrupted memory (holes read as zeros), the fixture's types and truth.
    """

    def reader(va: int) -> Callable[[int, int], bytes]:
        return lambda offset, count: fm.peek(va + offset, count)

    memory = FakeMemory()
    for region in s.world.mem.regions:
        memory.add(Region(region.name, region.va, region.pa, region.size, reader(region.va)))
    directory.mkdir()
    with open(directory / "vmcore", "wb") as f:
        write_core(f, memory, s.world.vmcoreinfo(), s.world.machine.e_machine)
    for name in ("types.elf", "expected.json"):
        (directory / name).write_bytes((FIXTURES / s.name / name).read_bytes())
    return directory


@settings(FUZZ_SETTINGS, max_examples=max(3, PER_COMMAND // 6))  # a process per dump
@given(data=st.data())
def test_triage_survives_corrupt_dumps(tmp_path_factory, data):
    # The corruptions of the loop above, written as dumps: triage checks each
    # in its own process and gives a row per dump, whatever it holds.
    s = subject(data.draw(st.sampled_from(FIXTURE_NAMES), label="fixture"))
    # A dump does not change under its reader: the damage is all there at once.
    corruptions = data.draw(st.lists(_damage(s), min_size=1, max_size=6), label="corruptions")
    fm = FaultyMemory(s.world)
    for description, apply in corruptions:
        note(description)
        apply(fm)
    dump = write_dump(s, fm, Path(tmp_path_factory.mktemp("triage")) / s.name)
    options = data.draw(
        st.lists(st.sampled_from(["--json", "--no-leaks", "-j2"]), unique=True), label="options"
    )
    args = ["triage", *options, "--timeout", str(SECONDS_PER_RUN), str(dump)]
    result = run_cli(*args)
    note(f"{result.code}: {result.err}")
    assert "Traceback" not in result.err + result.out, result
    assert result.code in (0, 1, 4), result
    if "--json" in args:
        rows = [json.loads(line) for line in result.out.splitlines()]
        assert len(rows) == 1 and rows[0]["dump"] == str(dump), rows
        assert (rows[0]["error"] is not None) == (result.code == 4), rows


def test_the_fuzzer_sees_every_fixture():
    assert set(FIXTURE_NAMES) == set(scenarios.fixture_names())


# -- core files -----------------------------------------------------------------


@FUZZ_SETTINGS
@given(data=st.data())
def test_corrupt_core_file_headers(tmp_path_factory, data):
    """Damaged ELF headers and VMCOREINFO: open, or refuse with exit 3."""
    name = data.draw(st.sampled_from(FIXTURE_NAMES), label="fixture")
    raw = bytearray((FIXTURES / name / "vmcore").read_bytes())
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        offset = data.draw(st.integers(0, 2047), label="offset")
        raw[offset : offset + 8] = data.draw(
            st.one_of(
                st.binary(min_size=1, max_size=8),
                st.sampled_from(WORD_VALUES).map(lambda v: struct.pack("<Q", v)),
            ),
            label="bytes",
        )
    core = Path(tmp_path_factory.mktemp("core")) / "vmcore"
    core.write_bytes(raw)
    with time_budget(SECONDS_PER_RUN):
        result = run_cli("-c", str(core), "-s", str(FIXTURES / name / "types.elf"), "pools")
    assert "--debug for the traceback" not in result.err, result.err
    assert result.code in (0, 1, 3, 4), result

"""
Where the real-kernel tier finds its dumps, and one Program per dump.

``NETMEM_PROBE_REALKERNEL`` names the kernels to check (``7.3`` or
``7.3,6.12,7.3-arm64,7.3-arm64-16k``: a series, with the Debian arm64 flavour
``make-vmcore SERIES --arch arm64 [--page-size 16k]`` boots; ``scripts/test``
sets it and runs ``scripts/realkernel/make-vmcore`` first).  Unset, the tier is
skipped with that reason; set, a missing dump is a failure, never a skip.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import drgn
import pytest

from netmem_probe.target import open_program

# The same cache root as scripts/realkernel/make-vmcore's.
CACHE = Path(os.environ.get("NETMEM_PROBE_CACHE", "~/.cache/netmem-probe/realkernel")).expanduser()
SERIES: List[str] = [s for s in os.environ.get("NETMEM_PROBE_REALKERNEL", "").split(",") if s]
KINDS = ("elf", "kdump")

if not SERIES:
    pytest.skip(
        "real-kernel tier: set NETMEM_PROBE_REALKERNEL=7.3 (scripts/test does)",
        allow_module_level=True,
    )


def make_vmcore(series: str) -> str:
    """The command that makes a series' dumps (``7.3-arm64-16k``: ``7.3 --arch arm64 ...``)."""
    version, _, flavour = series.partition("-")
    args = (
        f" --arch arm64{' --page-size 16k' if flavour.endswith('16k') else ''}" if flavour else ""
    )
    return f"scripts/realkernel/make-vmcore {version}{args}"


class Record(Dict[str, Any]):
    """
    A record make-vmcore wrote for a series.  A key it lacks fails the test
    saying that the cached dump is older than the scenario (re-run
    make-vmcore), instead of a KeyError.
    """

    series = ""
    late_failures: Dict[str, str] = {}  # by series: truth.json's late_failure

    def __missing__(self, key: str) -> Any:
        late = Record.late_failures.get(self.series)
        why = (
            f"make-vmcore failed after the dump ({late})"
            if late
            else "they were made by an older scenario"
        )
        pytest.fail(
            f"{self.series}: the cached dump's records have no {key!r}: {why}; "
            f"re-run {make_vmcore(self.series)}"
        )


def load_record(series: str, path: Path) -> Dict[str, Any]:
    """A JSON file make-vmcore wrote, every object in it a :class:`Record`."""

    def record(items: Dict[str, Any]) -> Record:
        out = Record(items)
        out.series = series
        return out

    loaded = json.loads(path.read_text(), object_hook=record)
    if path.name == "truth.json" and loaded.get("late_failure"):
        Record.late_failures[series] = loaded["late_failure"]
    return loaded


def truth(series: str) -> Dict[str, Any]:
    path = CACHE / f"latest-{series}" / "truth.json"
    if not path.exists():
        pytest.fail(
            f"no {series} dump: {make_vmcore(series)} did not run or failed ({path} missing)"
        )
    return load_record(series, path)


def live_record(series: str, name: str) -> Dict[str, Any]:
    """One file of the series' live run (``live-pools.json``, ``live-netlink.json``)."""
    return load_record(series, Path(live_truth(series)["live"][name]))


_programs: Dict[Tuple[str, str], drgn.Program] = {}


def program(series: str, kind: str) -> drgn.Program:
    """The Program of a dump, opened the way ``-c DUMP -s ...`` opens it."""
    key = (series, kind)
    if key not in _programs:
        t = truth(series)
        _programs[key] = open_program(core=t["dumps"][kind], symbols=t["symbols"])
    return _programs[key]


_btf_programs: Dict[Tuple[str, str], drgn.Program] = {}


def btf_program(series: str, kind: str) -> drgn.Program:
    """
    The Program of a dump opened with no ``-s`` at all, as ``-c DUMP`` opens
    it: types from the BTF in the dump's memory, symbols from its kallsyms.
    """
    key = (series, kind)
    if key not in _btf_programs:
        _btf_programs[key] = open_program(core=truth(series)["dumps"][kind])
    return _btf_programs[key]


def dumps() -> List[Tuple[str, str]]:
    """(series, dump kind) of every dump a series has (arm64: the ELF dump alone)."""
    out = []
    for series in SERIES:
        path = CACHE / f"latest-{series}" / "truth.json"
        have = json.loads(path.read_text())["dumps"] if path.exists() else {}
        # a missing series keeps both kinds: each of its tests fails saying so
        out += [(series, kind) for kind in KINDS if not have or have.get(kind)]
    return out


def live_truth(series: str) -> Dict[str, Any]:
    """
    The truth of a series made with ``--live``.  An arm64 dump made without it is
    skipped with that reason (under TCG the guest's live run takes 20-40 minutes, and
    the first one cross-builds drgn for the guest, about 10 more: scripts/test makes
    arm64 dumps without it; scripts/realkernel/README.md); elsewhere a missing one fails.
    """
    t = truth(series)
    if not t.get("live"):
        if t.get("late_failure"):
            pytest.fail(f"{series}: the live run failed after the dump: {t['late_failure']}")
        if t.get("arch") == "arm64":
            pytest.skip(f"{series}: made without --live ({make_vmcore(series)} --live)")
        pytest.fail(f"{series}: no live run ({make_vmcore(series)} --live)")
    return t


def small_kind(series: str) -> str:
    """The smaller dump of a series: kdump-compressed, or ELF where there is none (arm64)."""
    return "kdump" if truth(series)["dumps"].get("kdump") else "elf"


def page_size(t: Dict[str, Any]) -> int:
    """The kernel's PAGE_SIZE (truth.json before arm64 had none: x86-64, 4 KiB)."""
    return t.get("page_size", 4096)


def pool_ref(pool: Dict[str, Any]) -> str:
    """How a command names a pool of ``pools --json``: its id, or its address where the
    kernel gives it none (before the page_pools registry of Linux 6.8)."""
    return str(pool["id"]) if pool["id"] is not None else pool["address"]


def has_registry(prog: drgn.Program) -> bool:
    """Whether the kernel has the page_pools registry (Linux 6.8+)."""
    try:
        prog["page_pools"]
    except KeyError:
        return False
    return True


def netlink_pools(t: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    """Every pool the kernel's netlink listed, in any namespace, by id."""
    # none before Linux 6.8: netlink has no page-pool commands
    return {pool["id"]: pool for ns in t["netns"] for pool in ns["page-pool-get"] or []}

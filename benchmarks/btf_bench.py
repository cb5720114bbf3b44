#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
How long netmem_probe.btf takes to parse a kernel's BTF and to answer the first
drgn lookups, and how few drgn types a lookup builds.

    python benchmarks/btf_bench.py [BTF-or-ELF-file] [--repeat N] [--eager]

The file defaults to /sys/kernel/btf/vmlinux; an ELF file (vmlinux, .ko) is
read through its .BTF section. Times are wall-clock medians of --repeat runs,
each on a fresh parse and a fresh drgn.Program.
"""

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import drgn  # noqa: E402

from netmem_probe.btf import (  # noqa: E402
    Btf,
    BtfKind,
    parse_btf,
    read_btf_from_elf,
)
from netmem_probe.btf_drgn import add_btf_object_finder, add_btf_type_finder  # noqa: E402

LOOKUPS = [
    "struct page_pool",
    "struct sk_buff",
    "struct net_device",
    "netmem_ref",
    "enum net_iov_type",
    "unsigned long",
]


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> Tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def median_ms(samples: List[float]) -> str:
    return ms(statistics.median(samples))


def one_run(data: bytes) -> dict:
    """Parse, then do each first lookup on a fresh program; return the timings."""
    result: dict = {}
    result["parse"], btf = timed(lambda: parse_btf(data))
    prog = drgn.Program(drgn.host_platform)
    finder = add_btf_type_finder(prog, btf)
    for name in LOOKUPS:
        result["first " + name], _ = timed(functools.partial(prog.type, name))
    result["warm struct page_pool"], _ = timed(lambda: prog.type("struct page_pool"))
    add_btf_object_finder(prog, btf)
    result["first constant (enumerator index)"], _ = timed(lambda: prog["NET_IOV_MAX"])
    result["first find_var (VAR index)"], _ = timed(lambda: btf.find_var("runqueues"))
    result["first find FUNC (FUNC index)"], _ = timed(
        lambda: btf.find_types("page_pool_create", [BtfKind.FUNC])
    )
    result["_built"] = finder.built_count
    return result


def laziness(btf: Btf) -> None:
    prog = drgn.Program(drgn.host_platform)
    finder = add_btf_type_finder(prog, btf)
    pool = prog.type("struct page_pool")
    after_lookup = finder.built_count
    for member in pool.members:
        drgn.sizeof(member.type)
    print(
        f"drgn types built: {after_lookup} after looking up struct page_pool, "
        f"{finder.built_count} after sizing all {len(pool.members)} of its members "
        f"(BTF has {btf.nr_types - 1} types)"
    )


def eager(btf: Btf) -> None:
    """Build every BTF data type and every member type: the cost that laziness avoids."""
    prog = drgn.Program(drgn.host_platform)
    finder = add_btf_type_finder(prog, btf)
    skip = (BtfKind.VAR, BtfKind.DATASEC, BtfKind.DECL_TAG)

    def build_all() -> None:
        for type_id in range(1, btf.nr_types):
            if btf.kind(type_id) in skip:
                continue
            t = finder.type(type_id)
            if t.kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) and t.is_complete():
                for member in t.members:
                    _ = member.type  # builds the member's drgn type

    seconds, _ = timed(build_all)
    print(f"eager: every type and member built: {ms(seconds)} ({finder.built_count} drgn types)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("file", nargs="?", default="/sys/kernel/btf/vmlinux")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="also time building every type")
    args = parser.parse_args()

    path = Path(args.file)
    raw = path.read_bytes()
    data = read_btf_from_elf(str(path)) if raw[:4] == b"\x7fELF" else raw
    btf = parse_btf(data)
    print(
        f"{path}: {len(data) / 1e6:.2f} MB, {btf.nr_types - 1} types; "
        f"drgn {drgn.__version__}, Python {sys.version.split()[0]}; median of {args.repeat} runs"
    )

    runs = [one_run(data) for _ in range(args.repeat)]
    for key in runs[0]:
        if not key.startswith("_"):
            print(f"  {key:<36} {median_ms([run[key] for run in runs])}")
    first_total = [run["parse"] + run["first struct page_pool"] for run in runs]
    print(f"  {'parse + first struct page_pool':<36} {median_ms(first_total)}")
    laziness(btf)
    if args.eager:
        eager(btf)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""
How fast ``holders`` and ``leaks`` search RAM, against the raw read of RAM.

    benchmarks/search.py --core VMCORE -s VMLINUX [-s MODULE.ko.debug ...]
        [--pages 1,100,10000] [--jobs 1,2] [--drgn-search]

On one Program, one run times:

- the raw read: ``prog.read()`` of every RAM range (the memmap's valid pfn
  ranges, physical) in 64 MiB chunks, nothing done with the bytes;
- ``HolderSearch.find()`` with the skb slabs (what ``holders`` runs) for N pages drawn at random
  from RAM (with their struct page address and their memory as targets), for
  each N of ``--pages`` and each process count of ``--jobs``;
- ``find_leaks()`` (what ``leaks`` runs: memmap scan, slab walk if any, RAM
  search for what is left), for each process count;
- with ``--drgn-search``, drgn's ``search_memory_word()`` over every RAM range
  with the N pages' values and spans as ranges (the search before this
  engine), for the smallest N.

Each line gives the time and its ratio to the raw read measured in the same
run (the raw read is timed first and again at the end; the ratio uses the
faster of the two, so a cold page cache does not flatter the others).
"""

import argparse
import os
import random
import sys
import time
from typing import List, Set, Tuple

import drgn

from netmem_probe.kernel.holders import HolderSearch, page_target
from netmem_probe.kernel.leaks import find_leaks
from netmem_probe.kernel.netmem import valid_pfn_ranges
from netmem_probe.kernel.search import SearchOptions, ram_ranges
from netmem_probe.kernel.skbs import find_skb_slabs
from netmem_probe.kernel.walk import Problems
from netmem_probe.target import open_program

RAW_CHUNK = 64 << 20


def raw_read(prog: drgn.Program) -> Tuple[int, float]:
    ranges = ram_ranges(prog, Problems()) or []
    total = 0
    start = time.perf_counter()
    for lo, hi in ranges:
        while lo < hi:
            n = min(RAW_CHUNK, hi - lo)
            try:
                prog.read(lo, n, True)
            except drgn.FaultError:
                pass
            total += n
            lo += n
    return total, time.perf_counter() - start


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def random_pages(prog: drgn.Program, count: int, seed: int = 1) -> List[int]:
    pfns = [pfn for start, end in valid_pfn_ranges(prog) for pfn in (start, end)]
    rng = random.Random(seed)
    ranges = list(zip(pfns[::2], pfns[1::2]))
    weights = [end - start for start, end in ranges]
    out: Set[int] = set()
    while len(out) < count:
        start, end = rng.choices(ranges, weights)[0]
        out.add(rng.randrange(start, end))
    return sorted(out)


def bench_holders(prog: drgn.Program, count: int, jobs: int) -> Tuple[float, str]:
    problems = Problems()
    vmemmap = prog["vmemmap"].value_()
    size = drgn.sizeof(prog.type("struct page"))
    targets = [
        page_target(prog, pfn, vmemmap + pfn * size, None, None, 0, problems)
        for pfn in random_pages(prog, count)
    ]
    start = time.perf_counter()
    search = HolderSearch(prog, problems, search=SearchOptions(jobs=jobs))
    found = search.find(targets, find_skb_slabs(prog, problems))
    seconds = time.perf_counter() - start
    holders = [h for hs in found.values() for h in hs]
    referred = sum(h.pointed_from is not None for h in holders)
    return seconds, f"{len(holders)} references, {referred} with referrers"


def bench_leaks(prog: drgn.Program, jobs: int) -> Tuple[float, str]:
    problems = Problems()
    start = time.perf_counter()
    report = find_leaks(prog, problems, search=SearchOptions(jobs=jobs))
    verdicts = [v.verdict for p in report.pools for v in p.verdicts]
    summary = ", ".join(f"{verdicts.count(v)} {v}" for v in ("parked", "cached", "leaked"))
    return time.perf_counter() - start, summary


def bench_drgn_search(prog: drgn.Program, count: int) -> float:
    from drgn.helpers.linux.mm import phys_to_virt

    base = phys_to_virt(prog, 0).value_()
    vmemmap = prog["vmemmap"].value_()
    size = drgn.sizeof(prog.type("struct page"))
    page = prog["PAGE_SIZE"].value_()
    ranges = []
    for pfn in random_pages(prog, count):
        ranges.append((vmemmap + pfn * size, vmemmap + pfn * size))
        ranges.append((base + pfn * page, base + (pfn + 1) * page - 1))
    it = prog.search_memory_word(*ranges)
    start = time.perf_counter()
    for lo, hi in ram_ranges(prog, Problems()) or []:
        it.set_address_range(lo, hi - 1, True)
        try:
            for _ in it:
                pass
        except drgn.FaultError:
            pass
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--core", required=True, help="vmcore (ELF or kdump-compressed)")
    parser.add_argument("-s", dest="symbols", action="append", default=[], help="debug info")
    parser.add_argument("--pages", default="1,100,10000", help="page counts for holders")
    parser.add_argument("--jobs", default="1,2", help="process counts")
    parser.add_argument("--no-leaks", action="store_true", help="do not time leaks")
    parser.add_argument("--drgn-search", action="store_true", help="also time search_memory_word")
    args = parser.parse_args()
    prog = open_program(core=args.core, symbols=args.symbols)
    counts = [int(n) for n in args.pages.split(",") if n]
    jobs_list = [int(n) for n in args.jobs.split(",") if n]
    print(f"load average {load()}", flush=True)
    total, first = raw_read(prog)
    print(f"RAM {total / 2**30:.2f} GiB; raw read (64 MiB chunks): {first:.2f} s", flush=True)
    rows = []
    for jobs in jobs_list:
        for count in counts:
            seconds, hits = bench_holders(prog, count, jobs)
            rows.append((f"holders, {count} pages, --jobs {jobs} ({hits})", seconds))
            print(f"  {rows[-1][0]}: {seconds:.2f} s", flush=True)
        if not args.no_leaks:
            seconds, summary = bench_leaks(prog, jobs)
            rows.append((f"leaks, --jobs {jobs} ({summary})", seconds))
            print(f"  {rows[-1][0]}: {seconds:.2f} s", flush=True)
    if args.drgn_search:
        seconds = bench_drgn_search(prog, counts[0])
        rows.append((f"drgn search_memory_word, {counts[0]} pages", seconds))
        print(f"  {rows[-1][0]}: {seconds:.2f} s", flush=True)
    _, last = raw_read(prog)
    raw = min(first, last)
    print(f"raw read again: {last:.2f} s; ratios against {raw:.2f} s:")
    for name, seconds in rows:
        print(f"  {name}: {seconds:.2f} s = {seconds / raw:.2f}x the raw read")
    print(f"load average {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""
``--jobs 2`` against ``--jobs 1`` for the RAM search of ``holders`` on a kdump dump.

    benchmarks/jobs.py [--dir DIR] [--core vmcore.kdump] [--rounds 2]

By default it takes the Debian 7.3 dump ``make-vmcore 7.3`` left in the cache
(``latest-7.3`` in ``$NETMEM_PROBE_CACHE``, as make-vmcore reads it, else in
``~/.cache/netmem-probe/realkernel``): its kdump-compressed
``vmcore.kdump``, whose search is bound by zlib decompression, with
``vmlinux`` and the module debug files beside it.  It times
``HolderSearch.find()`` for one page (one search of all of RAM, the skb slabs
given) with one process and with two, alternately, ``--rounds`` times each,
and prints each run's wall and CPU time (the process and its workers: the
split should add no work), the best of each, their ratio, and the load
average before and after (the ratio means something on an idle machine only:
two processes need two idle cores).
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Tuple

import drgn

from netmem_probe.kernel.holders import HolderSearch, page_target
from netmem_probe.kernel.search import SearchOptions
from netmem_probe.kernel.skbs import find_skb_slabs
from netmem_probe.kernel.walk import Problems
from netmem_probe.target import open_program


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def default_dir() -> Path:
    cache = os.environ.get("NETMEM_PROBE_CACHE", "~/.cache/netmem-probe/realkernel")
    return Path(cache).expanduser() / "latest-7.3"


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the search's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def search_once(prog: drgn.Program, jobs: int) -> Tuple[float, float]:
    """Wall and CPU seconds of one ``holders`` search for the page of the middle pfn."""
    problems = Problems()
    pfn = prog["max_pfn"].value_() // 2
    page = prog["vmemmap"].value_() + pfn * drgn.sizeof(prog.type("struct page"))
    target = page_target(prog, pfn, page, None, None, 0, problems)
    start, cpu = time.perf_counter(), cpu_seconds()
    search = HolderSearch(prog, problems, search=SearchOptions(jobs=jobs))
    search.find([target], find_skb_slabs(prog, problems))
    return time.perf_counter() - start, cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dir", type=Path, default=default_dir(), help="make-vmcore's output")
    parser.add_argument("--core", default="vmcore.kdump", help="dump file in --dir")
    parser.add_argument("--rounds", type=int, default=2, help="runs per process count")
    args = parser.parse_args()
    core = args.dir / args.core
    if not core.exists():
        print(f"jobs.py: error: no {core}; run scripts/realkernel/make-vmcore 7.3", file=sys.stderr)
        return 2
    symbols = [str(args.dir / "vmlinux")] + [str(p) for p in sorted(args.dir.glob("*.ko.debug"))]
    prog = open_program(core=str(core), symbols=symbols)
    print(f"{core} ({core.stat().st_size >> 20} MiB); load average {load()}", flush=True)
    best = {1: float("inf"), 2: float("inf")}
    for _ in range(args.rounds):
        for jobs in (1, 2):
            seconds, cpu = search_once(prog, jobs)
            best[jobs] = min(best[jobs], seconds)
            print(
                f"  --jobs {jobs}: {seconds:.2f} s, {cpu:.2f} s of CPU (load average {load()})",
                flush=True,
            )
    print(
        f"best --jobs 1: {best[1]:.2f} s, --jobs 2: {best[2]:.2f} s; "
        f"ratio jobs-1/jobs-2 = {best[1] / best[2]:.2f}x (load average {load()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

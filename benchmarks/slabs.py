#!/usr/bin/env python3
"""
``leaks`` by the skb slab fast path on synthetic worlds of growing RAM, same skbs.

    benchmarks/slabs.py [--ram 8,64,256] [--pages 64] [--repeat 3]

Each world (Debian 7.3 layout) has GIB of RAM: its first 128 MiB stored, the
rest of the memmap generated on the fly from a tile of ordinary struct pages
(LRU, buddy, reserved, LIST_POISON; no page-pool page), and RAM past 128 MiB
absent.  In it, one detached pool with ``--pages`` pages in flight, each held
as frag 0 of an skb on a UDP socket's receive queue (the skbs in a modelled
``skbuff_head_cache``).  It times ``find_leaks()`` (memmap scan, skb slab walk,
verdicts; no RAM search since the slabs explain every page) and checks every
page came out parked, then prints the time per world, its ratio to the
smallest world's, and the process's peak RSS.

``leaks`` must read the whole memmap once (a page handed out by a pool is
listed nowhere else), so it also times that floor: a raw ``prog.read()`` of
the memmap in the scan's chunks.  The memmap pass finds both the page-pool
pages and the skb slabs; what comes after it (the skb walk, the pools'
caches and rings, the verdicts) is the fast path proper, timed apart from
the end of the pass (the last progress call).
"""

import argparse
import os
import resource
import sys
import time
from typing import Callable, Dict, List, Tuple

import drgn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from scan import memmap_tile, tiled  # noqa: E402

from netmem_probe.fake.pools import PP_FLAG_DMA_MAP, FakePagePool  # noqa: E402
from netmem_probe.fake.sockets import FakeSkb, FakeSocket  # noqa: E402
from netmem_probe.fake.world import World  # noqa: E402
from netmem_probe.kernel.leaks import find_leaks  # noqa: E402
from netmem_probe.kernel.search import SearchOptions  # noqa: E402
from netmem_probe.kernel.walk import Problems  # noqa: E402

NO_PP = 1 << 40  # a density no tile reaches: no generated page is a page-pool page


def synthetic(ram_gib: int, pages: int) -> drgn.Program:
    holder: Dict[str, Callable[[int, int], bytes]] = {}
    w = World("linux-7.3", ram_size=ram_gib << 30, memmap_fn=lambda o, n: holder["read"](o, n))
    pool = FakePagePool(w, flags=PP_FLAG_DMA_MAP)
    holder["read"] = tiled(memmap_tile(w, pool.obj.addr, NO_PP), 4 << 20)
    held = pool.alloc_pages(pages, "out")
    pool.detach(86400.0 - 600, release_retries=600)
    sock = FakeSocket(w, w.init_net, local=("10.0.2.15", 9000), owns_skbs=False)
    for page in held:
        sock.queue(FakeSkb(w, [page]), "receive")
    w.commit()
    return w.program()


def raw_memmap_read(prog: drgn.Program) -> float:
    """Seconds to read the memmap of every valid pfn range in the scan's chunks."""
    from netmem_probe.kernel.memmap import MemmapScan

    scan = MemmapScan(prog, Problems())
    start = time.perf_counter()
    for _ in scan.chunks():
        pass
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--ram", default="8,64,256", help="GiB of RAM per world")
    parser.add_argument("--pages", type=int, default=64, help="pages in flight, each in an skb")
    parser.add_argument("--repeat", type=int, default=3, help="runs per world (best kept)")
    args = parser.parse_args()
    rows: List[Tuple[int, float, float, float]] = []
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    pass_end = [0.0]

    def progress(done: int, total: int) -> None:
        pass_end[0] = time.perf_counter()

    for gib in [int(g) for g in args.ram.split(",")]:
        prog = synthetic(gib, args.pages)
        best = after = raw = float("inf")
        for _ in range(args.repeat):
            raw = min(raw, raw_memmap_read(prog))
            problems = Problems()
            start = time.perf_counter()
            report = find_leaks(prog, problems, progress=progress, search=SearchOptions(jobs=1))
            end = time.perf_counter()
            best = min(best, end - start)
            after = min(after, end - pass_end[0])
            verdicts = [v.verdict for p in report.pools for v in p.verdicts]
            assert verdicts == ["parked"] * args.pages and not problems, (verdicts, problems.items)
        rows.append((gib, best, after, raw))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{gib} GiB: leaks {best:.3f} s ({args.pages} pages parked; after the memmap pass "
            f"{after:.3f} s), raw read of the memmap {raw:.3f} s, peak RSS {rss:.0f} MiB",
            flush=True,
        )
    _, base, base_after, _ = rows[0]
    for gib, seconds, after, raw in rows:
        print(
            f"  {gib} GiB: leaks {seconds / base:.2f}x the {rows[0][0]} GiB world's, "
            f"{seconds / raw:.2f}x the raw memmap read; after the pass "
            f"{after / base_after:.2f}x the {rows[0][0]} GiB world's"
        )
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
"""

import argparse
import resource
import sys
import time
from typing import List, Tuple

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
    holder = {}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--ram", default="8,64,256", help="GiB of RAM per world")
    parser.add_argument("--pages", type=int, default=64, help="pages in flight, each in an skb")
    parser.add_argument("--repeat", type=int, default=3, help="runs per world (best kept)")
    args = parser.parse_args()
    rows: List[Tuple[int, float]] = []
    for gib in [int(g) for g in args.ram.split(",")]:
        prog = synthetic(gib, args.pages)
        best = None
        for _ in range(args.repeat):
            problems = Problems()
            start = time.perf_counter()
            report = find_leaks(prog, problems, search=SearchOptions(jobs=1))
            seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
            verdicts = [v.verdict for p in report.pools for v in p.verdicts]
            assert verdicts == ["parked"] * args.pages and not problems, (verdicts, problems.items)
        rows.append((gib, best))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{gib} GiB: leaks {best:.3f} s ({args.pages} pages parked), peak RSS {rss:.0f} MiB",
            flush=True,
        )
    base = rows[0][1]
    for gib, seconds in rows:
        print(f"  {gib} GiB: {seconds:.3f} s = {seconds / base:.2f}x the {rows[0][0]} GiB world")
    return 0


if __name__ == "__main__":
    sys.exit(main())

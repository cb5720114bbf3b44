#!/usr/bin/env python3
"""
How fast ``pages`` finds page-pool pages in the memmap, against the naive drgn way.

    benchmarks/scan.py [--ram GIB] [--density N] [--naive-pages N] [--chunk MIB]
    benchmarks/scan.py --core VMCORE -s VMLINUX [-s MODULE.ko.debug ...]

Without ``--core``: a fake world with GIB of simulated RAM (default 16 GiB,
4M struct pages).  Past its first 128 MiB the memmap is not stored: the
memory segment's read function repeats a tile of struct pages serialised by
drgn from the world's real 7.3 layout (LRU pages, free buddy pages, pages
whose ``lru`` holds LIST_POISON, reserved pages, and one page-pool page in
N, with a DMA index), so ``pp_magic`` candidates are realistic.  The world's
pool counts every generated page in flight, so the scan can be checked.

With ``--core``: a real vmcore (ELF or kdump-compressed) and its debug info.

On the same Program, one run times:

- ours: :class:`netmem_probe.kernel.pages.PpPageScanner` (bulk reads, strided
  signature search, a PpPage per hit with its pool and place);
- drgn's C ``search_memory_word(PP_SIGNATURE, ignore_mask=...)`` over each
  valid memmap range, with the stride check (hits only, no decoding);
- the naive loop, drgn's ``for_each_page()`` + ``is_pp_page()``, on the first
  ``--naive-pages`` pages, extrapolated;

and prints pages/s for each and the ratio of ours to the naive loop.
"""

import argparse
import itertools
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import drgn
from drgn import Object
from drgn.helpers.linux.mm import for_each_page
from drgn.helpers.linux.net import is_pp_page as drgn_is_pp_page

from netmem_probe.fake.objects import PAGE_OFFSET, PAGE_SHIFT, RAM_SIZE, VMEMMAP
from netmem_probe.fake.pools import PP_FLAG_DMA_MAP, PP_SIGNATURE, FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.netmem import pp_scheme, valid_pfn_ranges
from netmem_probe.kernel.pages import CHUNK_BYTES, PpPageScanner
from netmem_probe.target import open_program

TILE_PAGES = 4096
LIST_POISON1 = 0xDEAD000000000100
LIST_POISON2 = 0xDEAD000000000122
PGTY_BUDDY = 0xF0 << 24


def page_templates(world: World, pool: int) -> List[Callable[[int], bytes]]:
    """Makers of one struct page's bytes, by kind, each serialised by drgn."""
    prog = world.prog
    page_type = world.type("struct page")
    # Since Linux v6.18 page->flags is a memdesc_flags_t.
    wrapped = world.has_member("struct page", "flags.f")

    def make(value: Dict[str, Any]) -> bytes:
        return Object(prog, page_type, value=value).to_bytes_()

    def with_flags(value: Dict[str, Any], bits: int) -> Dict[str, Any]:
        value["flags"] = {"f": bits} if wrapped else bits
        return value

    def lru(i: int) -> bytes:
        return make(
            with_flags(
                {
                    "lru": {"next": VMEMMAP + 64 * (i + 7), "prev": VMEMMAP + 64 * (i + 3)},
                    "mapping": PAGE_OFFSET + 0x1234560 + 1,
                    "__folio_index": i,
                    "_mapcount": {"counter": 0},
                    "_refcount": {"counter": 2},
                },
                0x2000000000000068,
            )
        )

    def buddy(i: int) -> bytes:
        return make(
            with_flags(
                {
                    "lru": {"next": VMEMMAP + 64 * (i + 64), "prev": VMEMMAP + 64 * (i - 64)},
                    "private": 3,
                    "page_type": PGTY_BUDDY,
                },
                0x2000000000000000,
            )
        )

    def poisoned(i: int) -> bytes:
        return make(
            with_flags(
                {"lru": {"next": LIST_POISON1, "prev": LIST_POISON2}, "_refcount": {"counter": 1}},
                0x2000000000000000,
            )
        )

    def reserved(i: int) -> bytes:
        return make(with_flags({"_refcount": {"counter": 1}}, 0x400))

    def pp(i: int) -> bytes:
        return make(
            with_flags(
                {
                    "pp_magic": PP_SIGNATURE | ((1 + i) << 7),
                    "pp": pool,
                    "dma_addr": 0x100000000 + (i << 12),
                    "pp_ref_count": {"counter": 1},
                    "_refcount": {"counter": 1},
                },
                0x2000000000000000,
            )
        )

    return [lru, buddy, poisoned, reserved, pp]


def memmap_tile(world: World, pool: int, density: int) -> bytes:
    lru, buddy, poisoned, reserved, pp = page_templates(world, pool)
    parts = []
    for i in range(TILE_PAGES):
        if i % density == density // 2:
            parts.append(pp(i))
        elif i % 32 == 3:
            parts.append(poisoned(i))
        elif i % 8 == 0:
            parts.append(reserved(i))
        elif i % 4 == 1:
            parts.append(buddy(i))
        else:
            parts.append(lru(i))
    return b"".join(parts)


def tiled(tile: bytes, max_read: int) -> Callable[[int, int], bytes]:
    """A memory read function repeating ``tile`` forever, without storing it."""
    repeats = -(-(max_read + len(tile)) // len(tile))
    # A read returns bytes (fake/memory.py's ReadFn): slicing copies just the
    # count bytes asked for.
    big = tile * repeats

    def read(offset: int, count: int) -> bytes:
        start = offset % len(tile)
        if start + count <= len(big):
            return big[start : start + count]
        return (tile * (-(-(start + count) // len(tile))))[start : start + count]

    return read


def fake_program(ram_gib: int, density: int, chunk: int) -> Tuple[drgn.Program, int]:
    holder: Dict[str, Callable[[int, int], bytes]] = {}
    world = World(
        "linux-7.3",
        ram_size=ram_gib << 30,
        memmap_fn=lambda offset, count: holder["read"](offset, count),
    )
    pool = FakePagePool(world, flags=PP_FLAG_DMA_MAP)
    holder["read"] = tiled(memmap_tile(world, pool.obj.addr, density), max(chunk, 1 << 20))
    generated = ((ram_gib << 30) - RAM_SIZE) >> PAGE_SHIFT
    pool.hold = generated // TILE_PAGES * len(range(density // 2, TILE_PAGES, density))
    return world.program(), pool.hold


def bench_ours(prog: drgn.Program, chunk: int) -> Tuple[int, float, float]:
    """Pages found, seconds in all, and seconds of them reading the pools first."""
    start = time.perf_counter()
    scanner = PpPageScanner(prog, chunk_bytes=chunk)
    setup = time.perf_counter() - start
    found = sum(1 for _ in scanner.pages())
    return found, time.perf_counter() - start, setup


def bench_search(prog: drgn.Program) -> Tuple[int, float]:
    start = time.perf_counter()
    scheme = pp_scheme(prog)
    page = prog.type("struct page")
    size, offset = drgn.sizeof(page), drgn.offsetof(page, "pp_magic")
    memmap = prog["vmemmap"].value_()
    found = 0
    it = prog.search_memory_word(scheme.signature, ignore_mask=~scheme.magic_mask & (2**64 - 1))
    for lo, hi in valid_pfn_ranges(prog):
        it.set_address_range(memmap + lo * size + offset, memmap + hi * size - 1)
        for address, _ in it:
            if (address - memmap - offset) % size == 0:
                found += 1
    return found, time.perf_counter() - start


def bench_naive(prog: drgn.Program, pages: int) -> Tuple[int, int, float]:
    start = time.perf_counter()
    found = done = 0
    for page in itertools.islice(for_each_page(prog), pages):
        done += 1
        try:
            found += drgn_is_pp_page(page)
        except drgn.FaultError:
            pass
    return found, done, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument(
        "--ram",
        type=int,
        default=16,
        metavar="GIB",
        help="simulated RAM of the fake world (default 16)",
    )
    parser.add_argument(
        "--density",
        type=int,
        default=256,
        metavar="N",
        help="one page-pool page in N generated struct pages (default 256)",
    )
    parser.add_argument(
        "--naive-pages",
        type=int,
        default=200_000,
        metavar="N",
        help="struct pages the naive loop visits (default 200000)",
    )
    parser.add_argument(
        "--chunk",
        type=float,
        default=CHUNK_BYTES / (1 << 20),
        metavar="MIB",
        help="memmap bytes per read of our scan (default %(default)s)",
    )
    parser.add_argument("--core", metavar="VMCORE", help="a real vmcore instead of a fake world")
    parser.add_argument("-s", "--symbols", action="append", default=[], metavar="PATH")
    parser.add_argument(
        "--no-search",
        action="store_true",
        help="skip drgn's search_memory_word (it faults on QEMU kdump files)",
    )
    args = parser.parse_args()
    chunk = int(args.chunk * (1 << 20))

    if args.core:
        prog = open_program(core=args.core, symbols=args.symbols)
        truth = None
        what = args.core
    else:
        t = time.perf_counter()
        prog, truth = fake_program(args.ram, args.density, chunk)
        what = f"fake world, {args.ram} GiB (built in {time.perf_counter() - t:.1f} s)"
    total = sum(end - start for start, end in valid_pfn_ranges(prog))
    print(f"{what}: {total:,} struct pages ({total * 64 >> 20} MiB of memmap)")

    found, seconds, setup = bench_ours(prog, chunk)
    ours = total / seconds
    check = (
        ""
        if truth is None
        else (
            "  (= the pool's in flight)"
            if found == truth
            else f"  (MISMATCH: pool has {truth} in flight)"
        )
    )
    print(
        f"ours (bulk read {chunk >> 10} KiB + numpy signature test): {found:,} pp pages in "
        f"{seconds:.2f} s = {ours / 1e6:.1f} M pages/s{check}; the memmap scan alone "
        f"(without reading the pools first, {setup:.3f} s): "
        f"{total / (seconds - setup) / 1e6:.1f} M pages/s"
    )
    if not args.no_search:
        try:
            hits, seconds = bench_search(prog)
            print(
                f"drgn search_memory_word + stride check: {hits:,} hits in {seconds:.2f} s = "
                f"{total / seconds / 1e6:.1f} M pages/s"
            )
        except drgn.FaultError as e:
            print(f"drgn search_memory_word: fails: FaultError: {e}")
    hits, done, seconds = bench_naive(prog, args.naive_pages)
    naive = done / seconds
    print(
        f"naive for_each_page + is_pp_page: {done:,} pages in {seconds:.2f} s = "
        f"{naive / 1e6:.3f} M pages/s ({hits} pp pages), whole memmap "
        f"≈ {total / naive:.0f} s"
    )
    print(f"ratio ours / naive: {ours / naive:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

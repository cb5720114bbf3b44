#!/usr/bin/env python3
"""
How fast ``providers`` and ``niovs`` read a large memory provider area, against the naive drgn way.

    benchmarks/niovs.py [--niovs N] [--repeat R]

Builds a fake world with one devmem dma-buf binding of N niovs (default
262,144: 1 GiB of 4 KiB niovs) in two genpool chunks, a quarter of them held
by the stack and some in the pool's cache, then times, on the same Program:

- ``ProviderScanner.totals()``, what ``providers`` prints: one read per niov
  array and bitmap, counted on bitmaps;
- ``ProviderScanner.niovs()``, what ``niovs`` prints: the same reads, one
  record per niov from one ``struct.iter_unpack()``;
- the naive drgn loop: a drgn Object per niov and member access for its
  owner, pool and pp_ref_count, plus the genpool bit,

once over the world's Python memory segments and once over the same world
written as an ELF vmcore.
"""

import argparse
import tempfile
import time

import drgn
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.xarray import xa_for_each
from timing import timed

from netmem_probe.fake.fixture import write_fixture
from netmem_probe.fake.providers import FakeBinding
from netmem_probe.fake.world import World
from netmem_probe.kernel.providers import ProviderScanner
from netmem_probe.target import open_program


def build(niovs: int) -> World:
    world = World("linux-7.3", heap_size=0x3000000)
    nic = world.init_net.netdev("eth9", driver="bnxt_en", num_rx_queues=1)
    binding = FakeBinding(
        world, nic, [0], [niovs // 2, niovs - niovs // 2], binding_id=1, napi_base=8400
    )
    binding.alloc(binding.pools[0], 100, "cache")
    binding.alloc(binding.pools[0], niovs // 4, "stack", pp_ref_count=2)
    world.commit()
    return world


def totals(prog: drgn.Program) -> int:
    scanner = ProviderScanner(prog, scan_files=False)
    (area,) = scanner.areas()
    return scanner.totals(area)["stack"]


def rows(prog: drgn.Program) -> int:
    scanner = ProviderScanner(prog, scan_files=False)
    (area,) = scanner.areas()
    return sum(1 for niov in scanner.niovs(area) if niov.state == "stack")


def naive(prog: drgn.Program) -> int:
    stack = 0
    ((_, entry),) = xa_for_each(prog["net_devmem_dmabuf_bindings"].address_of_())
    binding = drgn.cast("struct net_devmem_dmabuf_binding *", entry)
    for chunk in list_for_each_entry(
        "struct gen_pool_chunk", binding.chunk_pool.chunks.address_of_(), "next_chunk"
    ):
        owner = drgn.cast("struct dmabuf_genpool_chunk_owner *", chunk.owner)
        niovs = owner.area.niovs
        for i in range(owner.area.num_niovs.value_()):
            niov = niovs[i]
            allocated = chunk.bits[i // 64].value_() >> (i % 64) & 1
            if (
                niov.owner.value_() == owner.area.address_
                and allocated
                and (niov.desc.pp.value_() and niov.desc.pp_ref_count.counter.value_() > 1)
            ):
                stack += 1
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--niovs", type=int, default=262144)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    world = build(args.niovs)
    print(f"world: one binding of {args.niovs} niovs built in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(world, tmp, "benchmark")
        targets = [
            ("fake memory (Python segments)", world.prog),
            ("ELF vmcore file", open_program(fixture=tmp)),
        ]
        for label, prog in targets:
            t_naive, n_naive = timed(naive, prog, 1)
            print(f"{label}:")
            for name, fn in (("providers (totals)", totals), ("niovs (a record each)", rows)):
                elapsed, found = timed(fn, prog, args.repeat)
                assert found == n_naive == args.niovs // 4, (found, n_naive)
                print(
                    f"  {name}: {elapsed:.3f} s ({args.niovs / elapsed:,.0f} niovs/s), "
                    f"{t_naive / elapsed:.1f}x the naive loop"
                )
            print(f"  naive drgn Objects: {t_naive:.3f} s ({args.niovs / t_naive:,.0f} niovs/s)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""
How fast ``pools`` reads many page pools, against the naive drgn way.

    benchmarks/pools.py [--pools N] [--repeat R]

Builds a fake world of N page pools (default 10,000) spread over netdevs in
several namespaces, then times, on the same drgn Program:

- netmem-probe's ``PagePoolScanner`` (one read per pool, decoded from bytes,
  plus the namespace/netdev hlist walk for each pool's visibility state);
- the naive drgn loop a user would write: ``xa_for_each(page_pools)`` and
  drgn Object member access for a subset of the same fields (no visibility
  walk),

once over the world's Python memory segments and once over the same world
written as an ELF vmcore.

Also times ``netmem-probe -f FIXTURE pools`` from process start to exit.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import drgn
from drgn.helpers.linux.xarray import xa_for_each
from timing import timed

from netmem_probe.fake.fixture import write_fixture
from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.pools import PP_FLAG_DMA_MAP, FakePagePool
from netmem_probe.fake.world import World
from netmem_probe.kernel.page_pool import PagePoolScanner
from netmem_probe.target import open_program

ROOT = Path(__file__).resolve().parent.parent


def build(pools: int) -> World:
    world = World("linux-7.3", heap_size=0x3800000)
    per_dev = 16
    dev = None
    for i in range(pools - len(world.pools)):
        if i % per_dev == 0:
            ns = world.init_net if i % (per_dev * 8) == 0 else NetNamespace(world, f"ns{i}")
            dev = ns.netdev(f"eth{i // per_dev}", driver="virtio_net", num_rx_queues=per_dev)
        pool = FakePagePool(
            world,
            netdev=dev,
            napi_id=8193 + i,
            queue=i % per_dev,
            flags=PP_FLAG_DMA_MAP,
            pool_size=16,
        )
        pool.hold = 7 + i % 5
    world.commit()
    return world


def ours(prog: drgn.Program) -> int:
    scanner = PagePoolScanner(prog)
    return sum(info.inflight for info in scanner.pools())


def naive(prog: drgn.Program) -> int:
    total = 0
    for _, entry in xa_for_each(prog["page_pools"].address_of_()):
        pool = drgn.cast("struct page_pool *", entry)
        hold = pool.pages_state_hold_cnt.value_()
        release = pool.pages_state_release_cnt.counter.value_()
        inflight = (hold - release) & 0xFFFFFFFF
        total += inflight if inflight < 1 << 31 else 0
        netdev = pool.slow.netdev
        if netdev:
            netdev.name.string_()
            netdev.ifindex.value_()
        pool.user.id.value_()
        pool.p.order.value_()
        pool.user.detach_time.value_()
        pool.p.napi.value_()
    return total


def process_time(fixture: str, repeat: int) -> float:
    exe = Path(sys.executable).parent / "netmem-probe"
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [str(exe), "-f", fixture, "pools"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pools", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    world = build(args.pools)
    print(f"world: {args.pools} pools built in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(world, tmp, "benchmark")
        targets = [
            ("fake memory (Python segments)", world.prog),
            ("ELF vmcore file", open_program(fixture=tmp)),
        ]
        for label, prog in targets:
            t_ours, n_ours = timed(ours, prog, args.repeat)
            t_naive, n_naive = timed(naive, prog, args.repeat)
            assert n_ours == n_naive, (n_ours, n_naive)
            print(f"{label}:")
            print(
                f"  netmem-probe PagePoolScanner: {t_ours:.3f} s "
                f"({args.pools / t_ours:,.0f} pools/s)"
            )
            print(
                f"  naive drgn xa_for_each + Objects: {t_naive:.3f} s "
                f"({args.pools / t_naive:,.0f} pools/s)"
            )
            print(f"  ratio: {t_naive / t_ours:.1f}x")
    fixture = str(ROOT / "fixtures/vmcore-stubs/linux-7.3-mixed")
    print(
        f"process start to exit, netmem-probe -f linux-7.3-mixed pools: "
        f"{process_time(fixture, args.repeat):.3f} s (best of {args.repeat})"
    )


if __name__ == "__main__":
    main()

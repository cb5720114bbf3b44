"""
Leaks
-----

For each detached page pool that still has pages (or net_iovs) in flight —
the pools behind "page_pool_release_retry() stalled pool shutdown" — find
each in-flight page in the memmap (and each handed-out net_iov in its
provider's areas), search kernel memory for what references it, and give a
verdict:

- ``parked``: an skb holds it (a frag or its head), normally on a live
  socket's queue, a driver's rx ring holds it (posted to the device), the
  kernel's or a module's static data holds it, or user space holds the
  net_iov (io_uring zcrx user references, or a devmem TCP token in a
  socket's ``sk_user_frags``): in use, maybe forever, but not lost;
- ``cached``: it sits in one of the pool's own structures (alloc cache,
  ring, fragment page), and the pool's release work will free it;
- ``leaked``: nothing that holds it was found anywhere; other references
  (stale ring slots, unclassified words) are listed as evidence.

In-flight pages the memmap does not show at all are counted as missing.
"""

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from drgn import Program

from netmem_probe.kernel.actors import Owner
from netmem_probe.kernel.holders import (
    POOL_KINDS,
    RING_KINDS,
    SKB_KINDS,
    STATIC_KIND,
    TOKEN_KINDS,
    Holder,
    HolderSearch,
    NetmemTarget,
    page_target,
)
from netmem_probe.kernel.page_pool import PagePoolInfo
from netmem_probe.kernel.pages import PpPageScanner, ProgressFn
from netmem_probe.kernel.providers import ProviderScanner
from netmem_probe.kernel.search import SearchOptions
from netmem_probe.kernel.skbs import SkbSlabFinder, find_skb_slabs
from netmem_probe.kernel.walk import Problems

__all__ = ("LeakReport", "NetmemVerdict", "PoolLeaks", "find_leaks")


@dataclass(frozen=True)
class NetmemVerdict:
    """One in-flight page or net_iov of a detached pool."""

    pool_id: Optional[int]
    target: NetmemTarget
    pfn: Optional[int]
    pp_ref_count: int
    refcount: Optional[int]  # a page's _refcount
    user_refs: Optional[int]  # an io_uring net_iov's user references
    verdict: str  # "parked", "cached" or "leaked"
    evidence: Tuple[Holder, ...]  # the references that hold it
    references: Tuple[Holder, ...]  # other references found
    #: A net_iov's area's owners (the processes holding its zcrx ring, with
    #: the descriptor); None for a page, or when they could not be read.
    owners: Optional[Tuple[Owner, ...]] = None


@dataclass
class PoolLeaks:
    """A detached pool with pages in flight, and what became of them."""

    info: PagePoolInfo
    verdicts: List[NetmemVerdict] = field(default_factory=list)

    @property
    def missing(self) -> int:
        """In flight by the pool's counters, but not found anywhere."""
        return max(0, self.info.inflight - len(self.verdicts))

    def count(self, verdict: str) -> int:
        return sum(1 for v in self.verdicts if v.verdict == verdict)


@dataclass
class LeakReport:
    pools: List[PoolLeaks]
    # Every readable pool's id, detached or not: what a pool id can name.
    pool_ids: FrozenSet[int] = frozenset()

    @property
    def leaked(self) -> int:
        return sum(p.count("leaked") + p.missing for p in self.pools)


@dataclass(frozen=True)
class LeakItem:
    """A page or net_iov a detached pool has out, with what was read of it."""

    pool: int  # struct page_pool address
    target: NetmemTarget
    pfn: Optional[int]
    pp_ref_count: int
    refcount: Optional[int]  # a page's _refcount; None for a net_iov
    user_refs: Optional[int]  # a net_iov's user references; None for a page
    owners: Optional[Tuple[Owner, ...]] = None  # the net_iov's area's owners
    provider: Optional[str] = None  # a net_iov's: "dmabuf" or "io_uring"


def _verdict(holders: Sequence[Holder], user_refs: Optional[int]) -> str:
    if (
        any(
            h.kind in RING_KINDS
            or h.kind == STATIC_KIND
            or h.kind in TOKEN_KINDS
            or (h.kind in SKB_KINDS and h.skb is not None)
            for h in holders
        )
        or user_refs
    ):
        return "parked"
    if any(h.kind in POOL_KINDS for h in holders):
        return "cached"
    return "leaked"


def find_leaks(
    prog: Program,
    problems: Problems,
    pool_ids: Sequence[int] = (),
    progress: Optional[ProgressFn] = None,
    search: Optional[SearchOptions] = None,
    search_all: bool = False,
) -> LeakReport:
    """
    Verdicts for every in-flight page and net_iov of the detached pools
    (only ``pool_ids`` if given); ``progress`` follows the memmap scan,
    ``search`` says how to search RAM.

    The sk_buffs of the skb slab caches and the pools' own caches and rings
    are read first; only what they do not explain (nothing there holds it)
    is searched for in RAM, unless ``search_all``.  An explained page's
    ``references`` are then what those structures hold, not every word of
    RAM that names it.
    """
    scanner = PpPageScanner(prog, problems)
    pools = [
        info
        for info in sorted(scanner.pools.values(), key=lambda i: i.sort_key)
        if info.detached and info.inflight and (not pool_ids or info.named_by(pool_ids))
    ]
    # --pool takes ids and addresses (pools had no id before v6.8)
    report = LeakReport(
        [PoolLeaks(info) for info in pools],
        frozenset(
            key
            for info in scanner.pools.values()
            for key in (info.id, info.address)
            if key is not None
        ),
    )
    if not pools:
        return report
    by_address = {p.info.address: p for p in report.pools}
    items: List[LeakItem] = []
    page_pools = [info for info in pools if not info.provider]
    # The skb slabs are found in the memmap pass that finds the pages.
    finder = SkbSlabFinder.for_program(prog, problems)
    slabs = None
    if page_pools:
        observe = finder.chunk if finder is not None else None
        for page in scanner.pages(page_pools, progress, observe):
            info = by_address[page.pool].info
            items.append(
                LeakItem(
                    pool=page.pool,
                    target=page_target(
                        prog, page.pfn, page.page, page.pool, page.pool_id, info.order, problems
                    ),
                    pfn=page.pfn,
                    pp_ref_count=page.pp_ref_count,
                    refcount=page.refcount,
                    user_refs=None,
                )
            )
        if finder is not None:
            slabs = finder.result(scanner.holes)
    elif finder is not None:
        slabs = find_skb_slabs(prog, problems, finder)
    provider_pools = [info for info in pools if info.provider]
    if provider_pools:
        items += _provider_items(prog, problems, provider_pools)
    targets = [item.target for item in items]
    holder_search = HolderSearch(prog, problems, scanner.pools, search)
    found: Dict[int, List[Holder]] = {}
    if slabs is not None and not search_all:
        from_skbs = holder_search.skb_holders(targets, slabs)
        from_pools = holder_search.pool_holders(targets)
        for target in targets:
            holders = sorted(
                from_skbs[target.netmem] + from_pools[target.netmem], key=lambda h: h.address
            )
            if any(h.holds for h in holders):
                found[target.netmem] = holders
    rest = [t for t in targets if t.netmem not in found]
    if rest and not search_all:
        # A devmem net_iov nothing else holds may be out with a receiver
        # under a token: the sockets' sk_user_frags are read, not RAM.
        devmem = {i.target.netmem for i in items if i.provider == "dmabuf"}
        candidates = [t for t in rest if t.netmem in devmem]
        for netmem, held in holder_search.token_holders(candidates).items():
            if held:
                found[netmem] = held
        rest = [t for t in rest if t.netmem not in found]
    if rest:
        found.update(holder_search.find(rest, slabs))
    for item in items:
        holders = found[item.target.netmem]
        evidence = tuple(h for h in holders if h.holds)
        leaks = by_address[item.pool]
        leaks.verdicts.append(
            NetmemVerdict(
                pool_id=leaks.info.id,
                target=item.target,
                pfn=item.pfn,
                pp_ref_count=item.pp_ref_count,
                refcount=item.refcount,
                user_refs=item.user_refs,
                verdict=_verdict(holders, item.user_refs),
                evidence=evidence,
                references=tuple(h for h in holders if not h.holds),
                owners=item.owners,
            )
        )
    return report


def _provider_items(
    prog: Program, problems: Problems, pools: Sequence[PagePoolInfo]
) -> List[LeakItem]:
    """
    The net_iovs memory providers' detached pools have out (not free), each
    with its area's owners: the processes' file tables are scanned for the
    io_uring rings that hold a zcrx area, so that what user space holds is
    named by process and descriptor.
    """
    scanner = ProviderScanner(prog, problems)
    items: List[LeakItem] = []
    for info in pools:
        # Memory providers (v6.12+) came long after pool ids (v6.8).
        for area in scanner.areas_of_pool(info.id) if info.id is not None else ():
            for niov in scanner.niovs(area):
                if niov.pool != info.address or niov.state == "free":
                    continue
                target = NetmemTarget(
                    niov.netmem,
                    "net_iov",
                    niov.address,
                    (niov.netmem, niov.address),
                    None,
                    info.address,
                    info.id,
                    niov.span.owner,
                )
                items.append(
                    LeakItem(
                        pool=info.address,
                        target=target,
                        pfn=None,
                        pp_ref_count=niov.pp_ref_count,
                        refcount=None,
                        user_refs=niov.user_refs,
                        owners=area.owners,
                        provider=area.kind,
                    )
                )
    return items

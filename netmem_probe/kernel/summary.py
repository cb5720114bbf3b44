"""
Holder summaries
----------------

Per pool, what holds its in-flight pages, counted by one holder kind per
page (the strongest reference: a socket's queue before a driver's ring
before the pool's own cache), and what would release them.

Kinds: ``socket-receive``, ``socket-error``, ``socket-backlog``,
``socket-tcp-ofo`` (or ``socket`` when the queue is not known), ``rx-ring``
(a driver's ring slot or an skb in one), ``gro`` (an skb in a NAPI GRO
list), ``backlog``, ``completion-queue`` and ``defer-list`` (an skb waiting
on a CPU), ``qdisc`` (an skb in a qdisc), ``skb`` (an skb on no queue
found), ``static-data`` (a word of the kernel's or a module's static
data), ``pool-cache``, ``pool-ring``, ``pool-frag-page``, ``user``
(io_uring zcrx user space: user_refs), ``user-token`` (a devmem TCP
receiver: a token in its socket's ``sk_user_frags``), ``unexplained``
(nothing that holds it).

What releases a net_iov user space holds depends on its provider: a zcrx
area's buffers come back through the ring's refill queue, or when the
io_uring ring is closed; a devmem TCP token comes back with
``SO_DEVMEM_DONTNEED`` on the receiving socket, or when that socket is
destroyed.  Unbinding the dma-buf (closing the netlink socket that bound it:
``netdev_nl_sock_priv_destroy()`` -> ``net_devmem_unbind_dmabuf()``, since
Linux kernel commit 170aafe35cb9 ("netdev: support binding dma-buf to
netdevice") (in v6.12)) takes the provider off its rx queues and drops the
socket's reference on the binding; it frees nothing a receiver holds, so the
binding's owner is not named as what releases a net_iov.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple

from drgn import Program

from netmem_probe.kernel.actors import Owner
from netmem_probe.kernel.holders import (
    POOL_KINDS,
    RING_KINDS,
    SKB_KINDS,
    SKB_QUEUES,
    STATIC_KIND,
    TOKEN_KINDS,
    Holder,
    HolderSearch,
    page_target,
)
from netmem_probe.kernel.page_pool import PagePoolInfo
from netmem_probe.kernel.pages import PpPageScanner, ProgressFn
from netmem_probe.kernel.walk import Problems

__all__ = ("HolderSummary", "holder_kind", "pool_holders", "release_of", "summarize")

#: What frees an skb waiting on a CPU.
QUEUE_RELEASE = {
    "backlog": "the CPU's backlog NAPI delivering it (process_backlog)",
    "completion-queue": "the CPU's next NET_TX softirq freeing its completion queue",
    "defer-list": "the CPU's next NET_RX softirq freeing its skb defer list",
}
#: The pool's own structures: nothing to do, the pool frees them itself.
POOL_RELEASE = "nothing: the pool's own cache, freed with the pool"


def _primary(holders: Sequence[Holder]) -> Optional[Holder]:
    """The holder a page is counted under."""
    skbs = [h for h in holders if h.kind in SKB_KINDS and h.holds]
    for h in skbs:
        if h.sock is not None:
            return h
    for h in holders:
        if h.kind in TOKEN_KINDS:
            return h
    for h in holders:
        if h.kind in RING_KINDS or (h.kind in SKB_KINDS and h.rx_slot is not None):
            return h
    if skbs:
        return skbs[0]
    for h in holders:
        if h.static is not None:
            return h
    for kind in POOL_KINDS:
        for h in holders:
            if h.kind == kind:
                return h
    return None


def holder_kind(holders: Sequence[Holder], user_refs: Optional[int] = None) -> str:
    """The kind a page with these references is counted under."""
    h = _primary(holders)
    if h is None:
        return "user" if user_refs else "unexplained"
    if h.kind in SKB_KINDS and h.sock is not None:
        return f"socket-{h.queue}" if h.queue else "socket"
    if h.kind in TOKEN_KINDS:
        return "user-token"
    if h.kind in RING_KINDS or h.rx_slot is not None:
        return "rx-ring"
    if h.kind in SKB_KINDS:
        return h.queue if h.queue in SKB_QUEUES else "skb"
    return h.kind


def release_of(
    holders: Sequence[Holder],
    user_refs: Optional[int] = None,
    owners: Optional[Tuple[Owner, ...]] = None,
) -> str:
    """
    What would release a page with these references, in a few words.
    ``user_refs``: a zcrx net_iov's user references; ``owners``: the
    processes holding its zcrx ring (closing the ring scrubs its areas' user
    references).  A devmem net_iov user space holds is a ``devmem-token``
    reference, released as its :attr:`Holder.release` says.
    """
    h = _primary(holders)
    if h is None:
        if user_refs:
            if owners:
                fds = ", ".join(f"fd {o.fd} of pid {o.pid} ({o.comm})" for o in owners)
                return f"the io_uring process returning its buffers, or: close {fds}"
            return "the io_uring process returning its buffers (or exiting)"
        return "none known: nothing holds it (a leak)"
    if (h.kind in SKB_KINDS or h.kind in TOKEN_KINDS) and h.sock is not None:
        if h.release:
            return h.release
        return f"closing {h.sock.family} socket {h.sock.local or hex(h.sock.address)}"
    if h.kind in TOKEN_KINDS:
        return h.release or "none known: a token of a socket that could not be read"
    if h.rx_slot is not None:
        return h.rx_slot.release
    if h.kind in SKB_KINDS and h.queue == "gro":
        return "the next NAPI poll flushing GRO" + (f" on {h.netdev}" if h.netdev else "")
    if h.kind in SKB_KINDS and h.queue in QUEUE_RELEASE:
        return QUEUE_RELEASE[h.queue]
    if h.kind in SKB_KINDS and h.queue == "qdisc":
        return f"the qdisc sending it ({h.detail})"
    if h.kind in SKB_KINDS:
        return "none known: an skb on no queue found"
    if h.kind == STATIC_KIND and h.release:
        return h.release
    return POOL_RELEASE


@dataclass
class HolderSummary:
    """Counts of a pool's pages by holder kind, and pages per release action."""

    kinds: Counter = field(default_factory=Counter)
    releases: Counter = field(default_factory=Counter)

    def add(
        self,
        holders: Sequence[Holder],
        user_refs: Optional[int] = None,
        owners: Optional[Tuple[Owner, ...]] = None,
    ) -> None:
        self.kinds[holder_kind(holders, user_refs)] += 1
        self.releases[release_of(holders, user_refs, owners)] += 1

    @property
    def unexplained(self) -> int:
        return self.kinds.get("unexplained", 0)

    def record(self) -> Dict[str, object]:
        """As JSON: ``holder-kinds`` (kind -> pages) and ``release`` actions, most pages first."""
        return {
            "holder-kinds": dict(self.kinds.most_common()),
            "release": [
                {"action": action, "pages": n} for action, n in self.releases.most_common()
            ],
        }

    def lines(self) -> Iterable[str]:
        """The summary as text lines."""
        yield "holders: " + ", ".join(f"{kind} {n}" for kind, n in self.kinds.most_common())
        for action, n in self.releases.most_common():
            if action != POOL_RELEASE:
                yield f"to release {n} page{'s' if n != 1 else ''}: {action}"


def summarize(
    items: Iterable[Tuple[Sequence[Holder], Optional[int], Optional[Tuple[Owner, ...]]]],
) -> HolderSummary:
    """
    The summary of pages given as ``(references, zcrx user_refs, owners)``
    (:func:`release_of`).
    """
    summary = HolderSummary()
    for holders, user_refs, owners in items:
        summary.add(holders, user_refs, owners)
    return summary


def pool_holders(
    prog: Program, problems: Problems, info: PagePoolInfo, progress: Optional[ProgressFn] = None
) -> Optional[HolderSummary]:
    """
    The holder summary of a page pool's in-flight pages: one scan of the
    memmap for its pages, one search of memory for their references.  None
    for a memory provider's pool (its net_iovs are summarized by
    ``providers``).
    """
    if info.provider:
        return None
    scanner = PpPageScanner(prog, problems)
    targets = [
        page_target(prog, page.pfn, page.page, page.pool, page.pool_id, info.order, problems)
        for page in scanner.pages([info], progress)
    ]
    found = HolderSearch(prog, problems, scanner.pools).find(targets)
    return summarize((found[t.netmem], None, None) for t in targets)

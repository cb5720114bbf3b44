"""
Per-CPU skb queues
------------------

Where an skb waits on a CPU rather than on a socket:

- the backlog: ``softnet_data.input_pkt_queue`` (skbs queued by
  ``netif_rx()``/RPS for the backlog NAPI) and ``process_queue`` (those the
  backlog NAPI took and is delivering), both ``sk_buff_head`` rings;
- ``softnet_data.completion_queue``: skbs freed in hard IRQ context, a
  NULL-terminated chain through ``skb->next``, freed by the next NET_TX
  softirq;
- the skb defer lists, skbs ``skb_attempt_defer_free()`` handed back to the
  CPU that allocated them, freed by that CPU's next NET_RX softirq;
- the NAPI skb cache (``napi_alloc_cache.skb_cache[0:skb_count]``): sk_buffs
  already released (their head and frags freed) kept for reuse.  Their stale
  ``head``/``data`` still point where the freed head was, so an skb found
  there holds nothing.

Each walk is bounded and validated; a list that loops, runs too long or does
not link back is reported and not followed further.
"""

from typing import Dict, List, NamedTuple, Optional

import drgn
from drgn import Object, Program

from netmem_probe.kernel.structs import member_exists
from netmem_probe.kernel.walk import Problems, list_nodes, read_words, wrap

__all__ = ("MAX_CPU_SKBS", "CpuQueues", "SkbPlace")

#: skbs followed along one per-CPU queue (the backlog is bounded by
#: ``netdev_max_backlog``, a defer list by ``skb_defer_max``: both far lower).
MAX_CPU_SKBS = 1 << 16


class SkbPlace(NamedTuple):
    """
    Where an skb waits: ``queue`` names the kind, ``detail`` the place;
    ``netdev`` the device it waits to leave by, where the place tells it (a
    qdisc's), not the skb (whose ``dev`` an rbtree's node may overlay).
    """

    queue: str
    detail: str
    netdev: Optional[str] = None


def _cpus(prog: Program) -> List[int]:
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    return list(for_each_possible_cpu(prog))


def chain(
    prog: Program, first: int, link: int, what: str, address: int, problems: Problems
) -> List[int]:
    """
    The nodes of a NULL-terminated singly linked chain starting at ``first``,
    each node's next pointer at offset ``link``: at most
    :data:`MAX_CPU_SKBS`; a loop, an unreadable node or a longer chain is
    reported under ``what`` at ``address`` and ends the walk.
    """
    nodes: List[int] = []
    seen = set()
    node = first
    while node:
        if node in seen:
            problems.add(what, address, f"chain loops at {node:#x}")
            return nodes
        if len(nodes) >= MAX_CPU_SKBS:
            problems.add(what, address, f"more than {MAX_CPU_SKBS} skbs (corrupt?)")
            return nodes
        seen.add(node)
        nodes.append(node)
        try:
            node = prog.read_word(wrap(node + link))
        except drgn.FaultError as e:
            problems.fault(what, node, e)
            return nodes
    return nodes


def _defer_list_is_llist(prog: Program) -> bool:
    """Whether the kernel's defer lists are ``struct llist_head`` (v6.18+)."""
    for name in ("struct skb_defer_node", "struct softnet_data"):
        try:
            member = prog.type(name).member("defer_list")
        except LookupError:
            continue
        return member.type.unaliased_kind() == drgn.TypeKind.STRUCT
    return False


def chain_at(prog: Program, at: int, link: int, what: str, problems: Problems) -> List[int]:
    """The :func:`chain` whose first node the word at ``at`` points to."""
    try:
        first = prog.read_word(wrap(at))
    except drgn.FaultError as e:
        problems.fault(what, at, e)
        return []
    return chain(prog, first, link, what, at, problems)


class CpuQueues:
    """
    The skbs waiting on every possible CPU, by skb address, read on
    construction.  Queues a kernel does not have (or a layout without the
    types) are left out.
    """

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        self.by_skb: Dict[int, SkbPlace] = {}
        try:
            skb_type = prog.type("struct sk_buff")
            self.next_at = drgn.offsetof(skb_type, "next")
            self.ll_node_at = (
                drgn.offsetof(skb_type, "ll_node") if member_exists(skb_type, "ll_node") else None
            )
        except LookupError:
            return
        try:
            cpus = _cpus(prog)
        except LookupError:
            return
        except drgn.FaultError as error:
            problems.fault("possible CPU mask (per-CPU queues not walked)", error.address, error)
            return
        self.defer_llist = _defer_list_is_llist(prog)
        for cpu in cpus:
            self._softnet(cpu)
            self._napi_cache(cpu)
        self._defer_nodes(cpus)

    def of_skb(self, skb: int) -> Optional[SkbPlace]:
        """Where the skb at ``skb`` waits on a CPU, if it does."""
        return self.by_skb.get(skb)

    def _add(self, skbs: List[int], queue: str, detail: str) -> None:
        for skb in skbs:
            self.by_skb.setdefault(skb, SkbPlace(queue, detail))

    def _per_cpu(self, name: str, cpu: int) -> Optional[Object]:
        from drgn.helpers.linux.percpu import per_cpu

        try:
            return per_cpu(self.prog[name], cpu)
        except (KeyError, LookupError):
            return None
        except drgn.FaultError as e:  # an unreadable __per_cpu_offset[cpu]
            self.problems.fault(f"CPU {cpu} {name}", e.address, e)
            return None

    def _softnet(self, cpu: int) -> None:
        sd = self._per_cpu("softnet_data", cpu)
        if sd is None:
            return
        sd_type = sd.type_
        for member in ("input_pkt_queue", "process_queue"):
            if not member_exists(sd_type, member):
                continue
            head = sd.address_ + drgn.offsetof(sd_type, member)
            skbs = list(
                list_nodes(
                    self.prog,
                    head,
                    what=f"CPU {cpu} backlog {member}",
                    problems=self.problems,
                    limit=MAX_CPU_SKBS,
                )
            )
            self._add(skbs, "backlog", f"backlog of CPU {cpu} ({member})")
        if member_exists(sd_type, "completion_queue"):
            at = sd.address_ + drgn.offsetof(sd_type, "completion_queue")
            self._add(
                chain_at(self.prog, at, self.next_at, f"CPU {cpu} completion_queue", self.problems),
                "completion-queue",
                f"completion queue of CPU {cpu}",
            )
        if member_exists(sd_type, "defer_list"):
            at = sd.address_ + drgn.offsetof(sd_type, "defer_list")
            self._add(self._defer_list(at, f"CPU {cpu}"), "defer-list", f"defer list of CPU {cpu}")

    def _defer_list(self, at: int, where: str) -> List[int]:
        """
        The skbs of the defer list at ``at``.  Since Linux kernel commit
        844c9db7f7f5 ("net: use llist for sd->defer_list") (in v6.18) it is
        a ``struct llist_head`` linking ``skb->ll_node``; before (Linux
        kernel commit 68822bdf76f1 ("net: generalize skb freeing deferral to
        per-cpu lists"), v5.19) an ``sk_buff *`` chained through ``skb->next``.
        Either way the first word is the first node.
        """
        what = f"skb defer list of {where}"
        if self.ll_node_at is not None and self.defer_llist:
            # llist_node.next is the node's first word
            return [
                node - self.ll_node_at for node in chain_at(self.prog, at, 0, what, self.problems)
            ]
        return chain_at(self.prog, at, self.next_at, what, self.problems)

    def _defer_nodes(self, cpus: List[int]) -> None:
        """
        Since Linux kernel commit 5628f3fe3b16 ("net: add NUMA awareness to
        skb_attempt_defer_free()") (in v6.18) the defer lists are per CPU and
        per NUMA node: ``net_hotdata.skb_defer_nodes``, a per-CPU array of
        ``nr_node_ids`` ``struct skb_defer_node``.
        """
        from drgn.helpers.linux.percpu import per_cpu_ptr

        try:
            nodes = self.prog["net_hotdata"].skb_defer_nodes
            node_type = self.prog.type("struct skb_defer_node")
        except (KeyError, LookupError, AttributeError):
            return
        try:
            nr_nodes = self.prog["nr_node_ids"].value_()
        except KeyError:
            nr_nodes = 1  # a kernel built without NUMA
        except drgn.FaultError as e:
            self.problems.fault("nr_node_ids", e.address, e)
            return
        if not nodes.value_():
            return  # not allocated yet (early boot)
        size = drgn.sizeof(node_type)
        list_at = drgn.offsetof(node_type, "defer_list")
        for cpu in cpus:
            try:
                base = per_cpu_ptr(nodes, cpu).value_()
            except drgn.FaultError as e:  # an unreadable __per_cpu_offset[cpu]
                self.problems.fault(f"CPU {cpu} skb defer nodes", e.address, e)
                continue
            for node in range(nr_nodes):
                where = f"CPU {cpu}, node {node}"
                skbs = self._defer_list(base + node * size + list_at, where)
                self._add(skbs, "defer-list", f"defer list of {where}")

    def _napi_cache(self, cpu: int) -> None:
        """
        ``napi_alloc_cache.skb_cache[0:skb_count]``: released sk_buffs kept
        for reuse (Linux kernel commit 795bb1c00dd ("net: bulk free
        infrastructure for NAPI context, use napi_consume_skb"), v4.5).
        """
        nc = self._per_cpu("napi_alloc_cache", cpu)
        if nc is None or not member_exists(nc.type_, "skb_cache"):
            return
        capacity = nc.type_.member("skb_cache").type.length or 0
        try:
            count = nc.skb_count.value_()
            if count > capacity:
                self.problems.add(
                    "NAPI skb cache",
                    nc.address_,
                    f"skb_count {count} beyond its {capacity} slots",
                )
                return
            at = nc.address_ + drgn.offsetof(nc.type_, "skb_cache")
            skbs = read_words(self.prog, at, count) if count else ()
        except drgn.FaultError as e:
            self.problems.fault("NAPI skb cache", nc.address_, e)
            return
        for slot, skb in enumerate(skbs):
            if skb:
                self.by_skb.setdefault(
                    skb, SkbPlace("napi-cache", f"NAPI skb cache of CPU {cpu}, slot {slot}")
                )

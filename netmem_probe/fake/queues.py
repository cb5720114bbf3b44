"""
Fake skb queues outside sockets: per CPU and in qdiscs.

:class:`FakeCpuQueues` is every CPU's ``softnet_data`` as ``net_dev_init()``
leaves it (empty backlog rings), the NAPI caches of released sk_buffs and,
where the layout has ``net_hotdata.skb_defer_nodes`` (v6.18+), one
``struct skb_defer_node`` per CPU; tests put skbs on them.
:class:`FakeQdisc` is a netdev's root qdisc (``pfifo_fast``, ``fq_codel`` or
a fifo) with its generic queues initialised empty.  Lists are wired at
commit.
"""

from typing import TYPE_CHECKING, Any, Dict, List, Optional

import drgn

from netmem_probe.fake.net import cstr
from netmem_probe.fake.objects import KObject

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetDevice
    from netmem_probe.fake.world import World

__all__ = ("FakeCpuQueues", "FakeQdisc")

#: pfifo_fast's band rings and fq_codel's flows in the fake world (the
#: kernel's are bigger; the readers take the sizes from memory).
RING_SIZE = 16
FQ_CODEL_FLOWS = 8


def _chain(skbs: List[KObject], member: str) -> int:
    """Link ``skbs`` through ``member`` (NULL-terminated); the first one's address."""
    for skb, nxt in zip(skbs, skbs[1:] + [None]):
        skb.set(member, nxt.addr if nxt is not None else 0)
    return skbs[0].addr if skbs else 0


class FakeCpuQueues:
    """Every CPU's skb queues; empty until a test fills them."""

    def __init__(self, world: "World") -> None:
        self.world = world
        address = world.prog["softnet_data"].address_
        self.softnet = [
            world.at(world.percpu_base[cpu] + address, "struct softnet_data", {})
            for cpu in range(world.nr_cpus)
        ]
        self.backlog = {
            (cpu, member): world.list(sd, member)
            for cpu, sd in enumerate(self.softnet)
            for member in ("input_pkt_queue", "process_queue")
        }
        self.completion: Dict[int, List[KObject]] = {}
        self.deferred: Dict[int, List[KObject]] = {}
        self.cached: Dict[int, List[KObject]] = {}
        self.defer_nodes: Optional[int] = None
        if world.has_member("struct net_hotdata", "skb_defer_nodes"):
            self.defer_nodes = world.percpu_alloc("struct skb_defer_node")
            world.global_("net_hotdata").set("skb_defer_nodes", self.defer_nodes)
        world.before_commit(self._write)

    def queue_backlog(self, cpu: int, skb: KObject, member: str = "input_pkt_queue") -> None:
        """Queue ``skb`` on CPU ``cpu``'s ``input_pkt_queue`` or ``process_queue``."""
        self.backlog[(cpu, member)].add(skb, "")

    def complete(self, cpu: int, skb: KObject) -> None:
        """Put ``skb`` on CPU ``cpu``'s completion queue."""
        self.completion.setdefault(cpu, []).append(skb)

    def defer(self, cpu: int, skb: KObject) -> None:
        """Hand ``skb`` back to CPU ``cpu``'s skb defer list (node 0)."""
        self.deferred.setdefault(cpu, []).append(skb)

    def cache(self, cpu: int, skb: KObject) -> None:
        """Keep the released ``skb`` in CPU ``cpu``'s NAPI skb cache."""
        self.cached.setdefault(cpu, []).append(skb)

    def _write(self) -> None:
        world = self.world
        for (cpu, member), queue in self.backlog.items():
            self.softnet[cpu].set(f"{member}.qlen", len(queue.nodes))
        for cpu, skbs in self.completion.items():
            self.softnet[cpu].set("completion_queue", _chain(skbs, "next"))
        nc_address = world.prog["napi_alloc_cache"].address_
        for cpu, skbs in self.cached.items():
            world.at(
                world.percpu_base[cpu] + nc_address,
                "struct napi_alloc_cache",
                {"skb_count": len(skbs), "skb_cache": [s.addr for s in skbs]},
            )
        for cpu, skbs in self.deferred.items():
            if self.defer_nodes is None:  # before v6.18: an sk_buff chain in softnet_data
                self.softnet[cpu].set("defer_list", _chain(skbs, "next"))
                continue
            # an llist through skb->ll_node, at the start of the skb like next
            first = _chain(skbs, "next")
            world.at(
                world.percpu_base[cpu] + self.defer_nodes,
                "struct skb_defer_node",
                {"defer_list": {"first": first}, "defer_count": {"counter": len(skbs)}},
            )


class FakeQdisc:
    """
    The root qdisc of ``dev`` (also its only tx queue's ``qdisc_sleeping``):
    ``kind`` is ``pfifo_fast``, ``fq_codel`` or ``pfifo`` (its skbs in ``q``).
    """

    def __init__(self, world: "World", dev: "NetDevice", kind: str, handle: int = 0) -> None:
        self.world = world
        self.kind = kind
        q_type = world.type("struct Qdisc")
        priv = {"pfifo_fast": "struct pfifo_fast_priv", "fq_codel": "struct fq_codel_sched_data"}
        priv_size = drgn.sizeof(world.type(priv[kind])) if kind in priv else 0
        size = drgn.offsetof(q_type, "privdata") + priv_size
        ops = world.alloc("struct Qdisc_ops", {"id": cstr(kind, 16)})
        self.obj = world.at(
            world.heap.alloc(size, 64), "struct Qdisc", {"ops": ops.addr, "handle": handle}
        )
        self.priv = self.obj.addr + drgn.offsetof(q_type, "privdata")
        self.generic = {m: world.list(self.obj, m) for m in ("gso_skb", "skb_bad_txq")}
        self.fifo: List[KObject] = []
        self.bands: Dict[int, List[KObject]] = {}
        self.flows: Dict[int, List[KObject]] = {}
        self.flows_cnt = FQ_CODEL_FLOWS
        self.data: Optional[KObject] = None  # fq_codel's private data, made at commit
        txq = world.alloc("struct netdev_queue", {"qdisc": self.obj.addr})
        txq.set("qdisc_sleeping", self.obj.addr)
        dev.obj.set("qdisc", self.obj.addr)
        dev.obj.set("_tx", txq.addr)
        dev.obj.set("num_tx_queues", 1)
        world.before_commit(self._write)

    def enqueue(self, skb: KObject, band_or_flow: int = 0) -> None:
        """Queue ``skb`` in band (pfifo_fast) or flow (fq_codel) ``band_or_flow``, or the fifo."""
        if self.kind == "pfifo_fast":
            self.bands.setdefault(band_or_flow, []).append(skb)
        elif self.kind == "fq_codel":
            self.flows.setdefault(band_or_flow, []).append(skb)
        else:
            self.fifo.append(skb)

    def _write(self) -> None:
        world = self.world
        self.obj.set("q", {"head": _chain(self.fifo, "next"), "qlen": len(self.fifo)})
        if self.fifo:
            self.obj.set("q.tail", self.fifo[-1].addr)
        if self.kind == "pfifo_fast":
            rings: List[Dict[str, Any]] = []
            for band in range(3):
                skbs = self.bands.get(band, [])
                queue = world.alloc("void *", [s.addr for s in skbs], count=RING_SIZE)
                ring = {"producer": len(skbs), "consumer_head": 0, "size": RING_SIZE}
                rings.append({"ring": {**ring, "queue": queue.addr}})
            world.at(self.priv, "struct pfifo_fast_priv", {"q": rings})
        elif self.kind == "fq_codel":
            flows = []
            for flow in range(self.flows_cnt):
                skbs = self.flows.get(flow, [])
                tail = skbs[-1].addr if skbs else 0
                flows.append({"head": _chain(skbs, "next"), "tail": tail})
            array = world.alloc("struct fq_codel_flow", flows, count=self.flows_cnt)
            self.data = world.at(
                self.priv,
                "struct fq_codel_sched_data",
                {"flows": array.addr, "flows_cnt": self.flows_cnt},
            )

"""
Fake skb queues outside sockets: per CPU and in qdiscs.

:class:`FakeCpuQueues` is every CPU's ``softnet_data`` as ``net_dev_init()``
leaves it (empty backlog rings), the NAPI caches of released sk_buffs and,
where the layout has ``net_hotdata.skb_defer_nodes`` (v6.18+), one
``struct skb_defer_node`` per CPU; tests put skbs on them.
:class:`FakeQdisc` is a netdev's root qdisc (``pfifo_fast``, ``fq_codel``,
``fq`` or a fifo) with its generic queues initialised empty.  Lists and trees
are wired at commit.
"""

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

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
#: fq's flow trees in the fake world: 1 << FQ_TREES_LOG (the kernel's default
#: is 1024).
FQ_TREES_LOG = 2
#: The flow number of fq's ``internal`` flow in :meth:`FakeQdisc.enqueue_fq`.
FQ_INTERNAL = -1


def _chain(skbs: List[KObject], member: str) -> int:
    """Link ``skbs`` through ``member`` (NULL-terminated); the first one's address."""
    for skb, nxt in zip(skbs, skbs[1:] + [None]):
        skb.set(member, nxt.addr if nxt is not None else 0)
    return skbs[0].addr if skbs else 0


def _rbtree(nodes: List[int], parent: int = 0) -> Tuple[int, Dict[int, Tuple[int, int, int]]]:
    """
    A balanced binary tree of the ``struct rb_node`` addresses ``nodes`` (in
    order): its top node and, per node, (parent, right, left).  Colours do not
    matter to a reader; every node is black.
    """
    if not nodes:
        return 0, {}
    mid = len(nodes) // 2
    top = nodes[mid]
    left, links = _rbtree(nodes[:mid], top)
    right, more = _rbtree(nodes[mid + 1 :], top)
    links.update(more)
    links[top] = (parent, right, left)
    return top, links


def _forget(obj: KObject, members: Tuple[str, ...]) -> None:
    for member in members:
        obj.value.pop(member, None)


def _rb_write(obj: KObject, path: str, links: Tuple[int, int, int]) -> None:
    parent, right, left = links
    obj.set(path, {"__rb_parent_color": parent | 1, "rb_right": right, "rb_left": left})


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
    ``kind`` is ``pfifo_fast``, ``fq_codel``, ``fq`` or ``pfifo`` (its skbs
    in ``q``).
    """

    def __init__(self, world: "World", dev: "NetDevice", kind: str, handle: int = 0) -> None:
        self.world = world
        self.kind = kind
        q_type = world.type("struct Qdisc")
        priv = {
            "pfifo_fast": "struct pfifo_fast_priv",
            "fq_codel": "struct fq_codel_sched_data",
            "fq": "struct fq_sched_data",
        }
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
        self.data: Optional[KObject] = None  # fq_codel's or fq's private data, made at commit
        # fq: per flow number, its band and its skbs in the list and in the rbtree
        self.fq_flows: Dict[int, Tuple[int, List[KObject], List[KObject]]] = {}
        self.fq_flow_objs: Dict[int, KObject] = {}  # fq's flows, made at commit
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

    def enqueue_fq(self, skb: KObject, flow: int, band: int = 1, rbtree: bool = False) -> None:
        """
        Queue ``skb`` in fq's flow ``flow`` (:data:`FQ_INTERNAL`: the internal
        flow) of ``band``: on its list, or with ``rbtree`` in its rbtree
        ``t_root`` (an skb leaving earlier than the list's tail).
        """
        _, listed, timed = self.fq_flows.setdefault(flow, (band, [], []))
        (timed if rbtree else listed).append(skb)
        if rbtree:
            # Run after the skb's own commit hook: next, prev and dev are the
            # rbnode's, written with the tree.
            self.world.before_commit(lambda: _forget(skb, ("next", "prev", "dev")))

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
        elif self.kind == "fq":
            self._write_fq()

    def _write_fq(self) -> None:
        """fq's private data: the internal flow and the flows of fq_root's trees."""
        world = self.world
        flow_type = world.type("struct fq_flow")
        data = world.at(self.priv, "struct fq_sched_data", {"fq_trees_log": FQ_TREES_LOG})
        self.data = data
        rbnode = drgn.offsetof(world.type("struct sk_buff"), "rbnode")
        trees: Dict[int, List[int]] = {}
        for number, (band, listed, timed) in sorted(self.fq_flows.items()):
            if number == FQ_INTERNAL:
                flow, path = data, "internal."
            else:
                flow, path = world.alloc("struct fq_flow"), ""
                self.fq_flow_objs[number] = flow
                flow.set("band", band)
                trees.setdefault(number % (1 << FQ_TREES_LOG), []).append(
                    flow.addr + drgn.offsetof(flow_type, "fq_node")
                )
            flow.set(path + "head", _chain(listed, "next"))
            flow.set(path + "tail", listed[-1].addr if listed else 0)
            top, links = _rbtree([skb.addr + rbnode for skb in timed])
            flow.set(path + "t_root.rb_node", top)
            for skb in timed:
                _rb_write(skb, "rbnode", links[skb.addr + rbnode])
        roots = []
        for tree in range(1 << FQ_TREES_LOG):
            top, links = _rbtree(trees.get(tree, []))
            roots.append({"rb_node": top})
            for flow in self.fq_flow_objs.values():
                node = flow.addr + drgn.offsetof(flow_type, "fq_node")
                if node in links:
                    _rb_write(flow, "fq_node", links[node])
        array = world.alloc("struct rb_root", roots, count=1 << FQ_TREES_LOG)
        data.set("fq_root", array.addr)

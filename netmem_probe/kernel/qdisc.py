"""
Qdiscs
------

The skbs a traffic control qdisc holds on its way out of a netdev.  Every
netdev's qdiscs are found from ``dev->qdisc`` (the root), each tx queue's
``qdisc_sleeping`` (the children of ``mq``) and ``dev->qdisc_hash`` (every
qdisc with a handle, such as the child of a ``tbf``).  Of each qdisc:

- the queues every qdisc has: ``gso_skb`` and ``skb_bad_txq``
  (``sk_buff_head`` rings of requeued skbs) and ``q`` (a ``qdisc_skb_head``,
  the queue of the fifo qdiscs: a chain through ``skb->next``);
- ``defer_list``, skbs waiting to be enqueued by the CPU that holds the qdisc
  (Linux kernel commit 100dfa74cad9 ("net: dev_queue_xmit() llist
  adoption"), v6.19), a chain through ``skb->ll_node``;
- the private queues of ``pfifo_fast`` (three bands, each an ``skb_array``),
  ``fq_codel`` (``flows[0:flows_cnt]``, each a chain from ``head``
  through ``skb->next``) and ``fq`` (its ``internal`` flow and the flows of
  the ``fq_root`` rbtrees, each a chain from ``head`` plus an rbtree of skbs
  ``t_root``), in ``qdisc_priv()``: the ``privdata`` member.

Walks are bounded; a list that loops or does not link back is reported.
"""

from typing import Dict, List, Optional, Set

import drgn
from drgn import Program

from netmem_probe.kernel.netdev import for_each_netdev_address
from netmem_probe.kernel.platform import word_size
from netmem_probe.kernel.softnet import MAX_CPU_SKBS, SkbPlace, chain, chain_at
from netmem_probe.kernel.structs import member_exists, read_cstring
from netmem_probe.kernel.walk import (
    Problems,
    hlist_nodes,
    list_nodes,
    ptr_ring_entries,
    rb_nodes,
    read_words,
    wrap,
)

__all__ = ("MAX_FQ_CODEL_FLOWS", "MAX_FQ_TREES_LOG", "Qdiscs")

#: fq_codel_change() refuses more than 65536 flows.
MAX_FQ_CODEL_FLOWS = 1 << 16
#: fq_change() refuses more than 256K flow trees (TCA_FQ_BUCKETS_LOG 1..18).
MAX_FQ_TREES_LOG = 18
#: tx queues read per netdev (a corrupt num_tx_queues).
MAX_TX_QUEUES = 1 << 12


class Qdiscs:
    """The skbs every qdisc of every netdev holds, by skb address, read on construction."""

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        self.by_skb: Dict[int, SkbPlace] = {}
        self.dev: Optional[str] = None
        try:
            dev_type = prog.type("struct net_device")
            self.q_type = prog.type("struct Qdisc")
            skb_type = prog.type("struct sk_buff")
            txq_type = prog.type("struct netdev_queue")
            self.dev_qdisc = drgn.offsetof(dev_type, "qdisc")
            self.dev_tx = drgn.offsetof(dev_type, "_tx")
            self.dev_ntx = drgn.offsetof(dev_type, "num_tx_queues")
            self.dev_name = drgn.offsetof(dev_type, "name")
            self.txq_size = drgn.sizeof(txq_type)
            self.txq_sleeping = drgn.offsetof(txq_type, "qdisc_sleeping")
            self.ops = drgn.offsetof(self.q_type, "ops")
            self.handle = drgn.offsetof(self.q_type, "handle")
            self.ops_id = drgn.offsetof(prog.type("struct Qdisc_ops"), "id")
            self.next_at = drgn.offsetof(skb_type, "next")
        except LookupError:
            return  # no qdisc types (a layout or BTF without them)
        self.hash_buckets = 0
        if member_exists(dev_type, "qdisc_hash"):
            self.dev_hash = drgn.offsetof(dev_type, "qdisc_hash")
            self.hash_buckets = dev_type.member("qdisc_hash").type.length or 0
            self.q_hash = drgn.offsetof(self.q_type, "hash")
        self.ll_node_at = (
            drgn.offsetof(skb_type, "ll_node") if member_exists(skb_type, "ll_node") else None
        )
        self.rbnode_at = (
            drgn.offsetof(skb_type, "rbnode") if member_exists(skb_type, "rbnode") else None
        )
        self.priv = (
            drgn.offsetof(self.q_type, "privdata")
            if member_exists(self.q_type, "privdata")
            else None
        )
        for dev in for_each_netdev_address(prog, problems):
            self._netdev(dev)

    def of_skb(self, skb: int) -> Optional[SkbPlace]:
        """Where the skb at ``skb`` waits in a qdisc, if it does."""
        return self.by_skb.get(skb)

    def _netdev(self, dev: int) -> None:
        prog = self.prog
        try:
            name = read_cstring(prog, dev + self.dev_name, 16) or "?"
            qdiscs = [prog.read_word(wrap(dev + self.dev_qdisc))]
            ntx = min(prog.read_u32(wrap(dev + self.dev_ntx)), MAX_TX_QUEUES)
            tx = prog.read_word(wrap(dev + self.dev_tx))
        except drgn.FaultError as e:
            self.problems.fault("netdev qdiscs", dev, e)
            return
        for i in range(ntx if tx else 0):
            try:
                qdiscs.append(prog.read_word(wrap(tx + i * self.txq_size + self.txq_sleeping)))
            except drgn.FaultError as e:
                self.problems.fault("netdev tx queue", tx + i * self.txq_size, e)
                break
        for bucket in range(self.hash_buckets):
            head = dev + self.dev_hash + bucket * prog.type("struct hlist_head").size
            for node in hlist_nodes(prog, head, what="qdisc_hash", problems=self.problems):
                qdiscs.append(node - self.q_hash)
        seen: Set[int] = set()
        for qdisc in qdiscs:
            if qdisc and qdisc not in seen:
                seen.add(qdisc)
                self._qdisc(qdisc, name)

    def _qdisc(self, qdisc: int, dev: str) -> None:
        prog = self.prog
        try:
            ops = prog.read_word(wrap(qdisc + self.ops))
            kind = read_cstring(prog, ops + self.ops_id, 16) if ops else ""
            handle = prog.read_u32(wrap(qdisc + self.handle))
        except drgn.FaultError as e:
            self.problems.fault("qdisc", qdisc, e)
            return
        kind = kind if kind and kind.isprintable() else "?"
        name = f"qdisc {kind} {handle >> 16:x}: of {dev}"
        self.dev = dev if dev != "?" else None  # the device of the skbs _add() names
        for member in ("gso_skb", "skb_bad_txq"):
            if member_exists(self.q_type, member):
                head = qdisc + drgn.offsetof(self.q_type, member)
                skbs = list_nodes(
                    prog, head, what=f"qdisc {member}", problems=self.problems, limit=MAX_CPU_SKBS
                )
                self._add(list(skbs), f"{name}, {member}")
        if member_exists(self.q_type, "q"):
            at = qdisc + drgn.offsetof(self.q_type, "q.head")
            self._add(
                chain_at(self.prog, at, self.next_at, "qdisc queue", self.problems),
                f"{name}, queue",
            )
        if member_exists(self.q_type, "defer_list") and self.ll_node_at is not None:
            at = qdisc + drgn.offsetof(self.q_type, "defer_list")
            nodes = chain_at(self.prog, at, 0, "qdisc defer_list", self.problems)
            self._add([n - self.ll_node_at for n in nodes], f"{name}, defer_list")
        if self.priv is None:
            return
        if kind == "pfifo_fast":
            self._pfifo_fast(qdisc + self.priv, name)
        elif kind == "fq_codel":
            self._fq_codel(qdisc + self.priv, name)
        elif kind == "fq":
            self._fq(qdisc + self.priv, name)

    def _add(self, skbs: List[int], detail: str) -> None:
        for skb in skbs:
            self.by_skb.setdefault(skb, SkbPlace("qdisc", detail, self.dev))

    def _pfifo_fast(self, priv: int, name: str) -> None:
        """pfifo_fast's three bands, each a ``struct skb_array`` (a ``ptr_ring``)."""
        try:
            priv_type = self.prog.type("struct pfifo_fast_priv")
            ring_type = self.prog.type("struct ptr_ring")
        except LookupError:
            return
        bands = priv_type.member("q").type.length or 0
        stride = drgn.sizeof(priv_type.member("q").type.type)
        fields = {
            f: drgn.offsetof(ring_type, f) for f in ("producer", "consumer_head", "size", "queue")
        }
        ring_at = drgn.offsetof(priv_type, "q") + drgn.offsetof(
            self.prog.type("struct skb_array"), "ring"
        )
        for band in range(bands):
            ring = priv + ring_at + band * stride
            try:
                producer = self.prog.read_u32(wrap(ring + fields["producer"]))
                consumer = self.prog.read_u32(wrap(ring + fields["consumer_head"]))
                size = self.prog.read_u32(wrap(ring + fields["size"]))
                queue = self.prog.read_word(wrap(ring + fields["queue"]))
                if size > MAX_CPU_SKBS or consumer >= max(size, 1) or producer >= max(size, 1):
                    self.problems.add(
                        "pfifo_fast band", ring, f"ring size {size}, consumer {consumer}"
                    )
                    continue
                skbs = ptr_ring_entries(producer, consumer, size, queue, self.prog)
            except drgn.FaultError as e:
                self.problems.fault("pfifo_fast band", ring, e)
                continue
            self._add([s for s in skbs if s], f"{name}, band {band}")

    def _fq_codel(self, priv: int, name: str) -> None:
        """fq_codel's flows: ``flows[0:flows_cnt]``, each a chain from ``head``."""
        try:
            data_type = self.prog.type("struct fq_codel_sched_data")
            flow_type = self.prog.type("struct fq_codel_flow")
        except LookupError:
            return
        try:
            flows = self.prog.read_word(wrap(priv + drgn.offsetof(data_type, "flows")))
            count = self.prog.read_u32(wrap(priv + drgn.offsetof(data_type, "flows_cnt")))
        except drgn.FaultError as e:
            self.problems.fault("fq_codel", priv, e)
            return
        if not flows:
            return
        if count > MAX_FQ_CODEL_FLOWS:
            self.problems.add("fq_codel", priv, f"flows_cnt {count} beyond {MAX_FQ_CODEL_FLOWS}")
            return
        stride = drgn.sizeof(flow_type)
        head_at = drgn.offsetof(flow_type, "head")
        word = word_size(self.prog)
        try:
            words = read_words(self.prog, flows, count * stride // word)
        except drgn.FaultError as e:
            self.problems.fault("fq_codel flows", flows, e)
            return
        for flow in range(count):
            first = words[(flow * stride + head_at) // word]
            if first:
                at = flows + flow * stride + head_at
                skbs = chain(self.prog, first, self.next_at, "fq_codel flow", at, self.problems)
                self._add(skbs, f"{name}, flow {flow}")

    def _fq(self, priv: int, name: str) -> None:
        """
        fq's flows: ``internal`` (the fast path's, unhashed) and every flow
        of the ``fq_root[0:1 << fq_trees_log]`` rbtrees (``fq_node``), which
        hold every other flow, empty or throttled ones included.
        """
        prog = self.prog
        try:
            data_type = prog.type("struct fq_sched_data")
            flow_type = prog.type("struct fq_flow")
        except LookupError:
            return  # sch_fq's types not loaded (no sch_fq.ko debug info or BTF)
        try:
            roots = prog.read_word(wrap(priv + drgn.offsetof(data_type, "fq_root")))
            log = prog.read_u8(wrap(priv + drgn.offsetof(data_type, "fq_trees_log")))
        except drgn.FaultError as e:
            self.problems.fault("fq", priv, e)
            return
        self._fq_flow(priv + drgn.offsetof(data_type, "internal"), flow_type, name, internal=True)
        if not roots:
            return
        if log > MAX_FQ_TREES_LOG:
            self.problems.add("fq", priv, f"fq_trees_log {log} beyond {MAX_FQ_TREES_LOG}")
            return
        try:
            tops = read_words(prog, roots, 1 << log)  # struct rb_root is one pointer
        except drgn.FaultError as e:
            self.problems.fault("fq flow trees", roots, e)
            return
        fq_node = drgn.offsetof(flow_type, "fq_node")
        for top in tops:
            if top:
                for node in rb_nodes(prog, top, what="fq flow tree", problems=self.problems):
                    self._fq_flow(node - fq_node, flow_type, name, internal=False)

    def _fq_flow(self, flow: int, flow_type: drgn.Type, name: str, internal: bool) -> None:
        """
        The skbs of one fq flow, named "internal flow" or "flow ADDRESS, band
        B": the chain from ``head`` and the rbtree ``t_root``.
        """
        prog = self.prog
        try:
            head = prog.read_word(wrap(flow + drgn.offsetof(flow_type, "head")))
            # Since Linux kernel commit eeb84aa0d0af ("net_sched: sch_fq: do not
            # assume EDT packets are ordered") (in v5.2) an skb that leaves
            # earlier than the flow's tail waits in the rbtree t_root instead.
            top = (
                prog.read_word(wrap(flow + drgn.offsetof(flow_type, "t_root.rb_node")))
                if member_exists(flow_type, "t_root")
                else 0
            )
            # Since Linux kernel commit 29f834aa326e ("net_sched: sch_fq: add 3
            # bands and WRR scheduling") (in v6.7) a flow is served in one band.
            band = (
                prog.read_u32(wrap(flow + drgn.offsetof(flow_type, "band")))
                if member_exists(flow_type, "band")
                else None
            )
        except drgn.FaultError as e:
            self.problems.fault("fq flow", flow, e)
            return
        if internal:  # fq_enqueue() gives the internal flow no band
            detail = f"{name}, internal flow"
        else:
            detail = f"{name}, flow {flow:#x}" + ("" if band is None else f", band {band}")
        skbs = chain(prog, head, self.next_at, "fq flow", flow, self.problems) if head else []
        if top:
            if self.rbnode_at is None:
                self.problems.add("fq flow", flow, "no sk_buff.rbnode in the types")
            else:
                nodes = rb_nodes(prog, top, what="fq flow rbtree", problems=self.problems)
                skbs += [node - self.rbnode_at for node in nodes]
        self._add(skbs, detail)

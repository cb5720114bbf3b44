"""
Queues
------

Where an skb waits that is not a socket's ``sk_buff_head`` ring:

- TCP's out-of-order queue, an rbtree of skbs (``skb->rbnode``) rooted at
  ``tcp_sock.out_of_order_queue``, told from the skb side;
- NAPI's GRO lists: each NAPI instance's hash buckets and ``rx_list`` of
  skbs held for merging, walked from every netdev's ``napi_list``.

Walks are bounded and validated; a parent chain that loops or runs too long,
or a list that does not link back, is reported, never followed further.
"""

from typing import Dict, Optional

import drgn
from drgn import Program

from netmem_probe.kernel.netdev import for_each_netdev_address
from netmem_probe.kernel.structs import member_exists, read_cstring
from netmem_probe.kernel.walk import Problems, list_nodes, wrap

__all__ = ("MAX_GRO_SKBS", "MAX_RB_DEPTH", "GroLists", "TcpOfoQueue")

#: skbs followed along one GRO list (GRO holds at most MAX_GRO_SKBS = 8 per
#: bucket; a longer list is corrupt).
MAX_GRO_SKBS = 64

#: An rbtree of n nodes is at most 2*log2(n+1) deep: 128 covers any queue.
MAX_RB_DEPTH = 128


class TcpOfoQueue:
    """Whether an skb sits in its socket's TCP out-of-order rbtree."""

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.prog = prog
        self.problems = problems
        try:
            self.rbnode = drgn.offsetof(prog.type("struct sk_buff"), "rbnode")
            self.root = drgn.offsetof(prog.type("struct tcp_sock"), "out_of_order_queue.rb_node")
        except LookupError:  # no TCP types (a BTF or fixture without them)
            self.root = None

    def _top(self, skb: int) -> Optional[int]:
        """The root node of the rbtree holding ``skb``'s rbnode; None if it cannot be told."""
        node = skb + self.rbnode
        seen = {node}
        for _ in range(MAX_RB_DEPTH):
            try:
                parent = self.prog.read_word(wrap(node)) & ~3  # __rb_parent_color
            except drgn.FaultError as e:
                self.problems.fault("TCP out-of-order rbtree", node, e)
                return None
            if not parent:
                return node
            if parent in seen:
                self.problems.add("TCP out-of-order rbtree", skb, "parent chain loops")
                return None
            seen.add(parent)
            node = parent
        self.problems.add(
            "TCP out-of-order rbtree", skb, f"deeper than {MAX_RB_DEPTH} levels (corrupt?)"
        )
        return None

    def holds(self, sk: int, skb: int) -> bool:
        """Whether ``skb`` is in the out-of-order queue of the TCP socket ``sk``."""
        if self.root is None:
            return False
        try:
            root = self.prog.read_word(wrap(sk + self.root))
        except drgn.FaultError:
            return False
        if not root:
            return False
        return self._top(skb) == root


class GroLists:
    """
    The skbs every NAPI instance holds in its GRO lists, by skb address,
    each named "GRO list of napi ID (DEV), bucket B" or "... rx_list".
    """

    def __init__(self, prog: Program, problems: Problems) -> None:
        self.by_skb: Dict[int, str] = {}
        napi_type = prog.type("struct napi_struct")
        if member_exists(napi_type, "gro.hash"):
            # Since Linux kernel commit 291515c76409 ("net: gro: decouple
            # GRO from the NAPI layer") (in v6.15) the GRO state is napi->gro,
            # a struct gro_node.
            hash_path, rx_path = "gro.hash", "gro.rx_list"
        elif member_exists(napi_type, "gro_hash"):
            hash_path, rx_path = "gro_hash", "rx_list"
        else:
            return  # no GRO types (a fixture or BTF without them)
        try:
            list_in_skb = drgn.offsetof(prog.type("struct sk_buff"), "list")
            gro_list = prog.type("struct gro_list")
        except LookupError:
            return
        buckets = drgn.offsetof(napi_type, hash_path)
        count = napi_type.member(hash_path.split(".")[0]).type
        nr_buckets = (count.member("hash").type.length if "." in hash_path else count.length) or 0
        stride = drgn.sizeof(gro_list)
        list_at = drgn.offsetof(gro_list, "list")
        rx_list = drgn.offsetof(napi_type, rx_path)
        napi_node = drgn.offsetof(napi_type, "dev_list")
        napi_id = drgn.offsetof(napi_type, "napi_id")
        dev_type = prog.type("struct net_device")
        dev_napis = drgn.offsetof(dev_type, "napi_list")
        dev_name = drgn.offsetof(dev_type, "name")
        for dev in for_each_netdev_address(prog, problems):
            try:
                name = read_cstring(prog, dev + dev_name, 16) or "?"
            except drgn.FaultError:
                name = "?"
            napis = list_nodes(prog, dev + dev_napis, what="napi_list", problems=problems)
            for napi_at in napis:
                napi = napi_at - napi_node
                try:
                    nid = prog.read_u32(wrap(napi + napi_id))
                except drgn.FaultError as e:
                    problems.fault("napi_struct", napi, e)
                    continue
                heads = [
                    (napi + buckets + b * stride + list_at, f"bucket {b}")
                    for b in range(nr_buckets)
                ]
                heads.append((napi + rx_list, "rx_list"))
                for head, where in heads:
                    skbs = list_nodes(
                        prog, head, what="GRO list", problems=problems, limit=MAX_GRO_SKBS
                    )
                    for skb in skbs:
                        self.by_skb[skb - list_in_skb] = f"GRO list of napi {nid} ({name}), {where}"

    def of_skb(self, skb: int) -> Optional[str]:
        """Where the skb at ``skb`` waits in a GRO list, if it does."""
        return self.by_skb.get(skb)

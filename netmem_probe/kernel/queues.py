"""
Queues
------

Socket queues that are not ``sk_buff_head`` rings, told from the skb
side: TCP's out-of-order queue, an rbtree of skbs (``skb->rbnode``) rooted
at ``tcp_sock.out_of_order_queue``.  Walks are bounded; a parent chain that
loops or runs too long is reported, never followed further.
"""

from typing import Optional

import drgn
from drgn import Program

from netmem_probe.kernel.walk import Problems, wrap

__all__ = ("MAX_RB_DEPTH", "TcpOfoQueue")

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

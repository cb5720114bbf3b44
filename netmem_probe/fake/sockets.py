"""
Fake sockets and skbs: who holds page-pool pages and net_iovs.

A :class:`FakeSocket` is a ``struct sock`` with its receive and error queues
(``sk_buff_head`` rings, wired at commit) and its backlog; a :class:`FakeSkb`
is a ``struct sk_buff`` with its ``struct skb_shared_info`` at
``head + end``.  The head buffer is a kmalloc'ed heap buffer, or a piece of a
page-pool page (``head_frag``, as ``build_skb()`` on a pool fragment makes);
the frags hold page or net_iov netmems.

Which skb holds which netmem, on which queue of which socket, is the model's
truth: :func:`add_sockets` records what ``holders`` and ``leaks`` must
report in ``world.expected``.
"""

import ipaddress
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from drgn import offsetof

from netmem_probe.fake.objects import FakeXArray
from netmem_probe.fake.pools import FakePage, FakePagePool
from netmem_probe.fake.slab import alloc_skb

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetDevice, NetNamespace
    from netmem_probe.fake.providers import FakeNiov
    from netmem_probe.fake.world import World

__all__ = ("AF_INET", "AF_INET6", "FakeSkb", "FakeSocket", "add_sockets")

AF_INET = 2
AF_INET6 = 10
IPPROTO = {"tcp": 6, "udp": 17}
TCP_ESTABLISHED = 1
TCP_CLOSE = 7
NET_SKB_PAD = 64
HEAD_BUFFER = 512  # kmalloc'ed head: end, where skb_shared_info starts
HEAD_FRAG_OFFSET = 1024  # where build_skb() puts a head inside a pool page

Holdable = Union[FakePage, "FakeNiov"]


def _be32(address: str) -> int:
    """An IPv4 address as the integer value of its __be32 in memory."""
    return int.from_bytes(bytes(int(part) for part in address.split(".")), "little")


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


class FakeSocket:
    """
    An IPv4 or IPv6 ``struct sock`` (by the form of ``local``'s address):
    ``sock_common`` addresses, receive and error queues, and the backlog (a
    singly linked chain through ``skb->next``).

    :param owns_skbs: whether queued skbs point back (``skb->sk``), as
        ``skb_set_owner_r()`` does for TCP; UDP leaves ``skb->sk`` NULL and
        reuses ``skb->dev`` as ``dev_scratch``.
    :param protocol: ``"tcp"`` or ``"udp"`` (``sk_protocol``; by default tcp
        when it owns its skbs).  A TCP socket sits in a ``struct tcp_sock``
        when the layout has one, with an out-of-order queue (``"tcp-ofo"``).
    """

    QUEUES = {"receive": "sk_receive_queue", "error": "sk_error_queue"}

    def __init__(
        self,
        world: "World",
        ns: "NetNamespace",
        *,
        local: Tuple[str, int],
        remote: Tuple[str, int] = ("0.0.0.0", 0),
        owns_skbs: bool = True,
        protocol: Optional[str] = None,
    ) -> None:
        self.world = world
        self.ns = ns
        self.local = local
        self.remote = remote
        self.owns_skbs = owns_skbs
        connected = remote[1] != 0
        self.v6 = ":" in local[0]
        common: Dict[str, Any] = {
            "skc_family": AF_INET6 if self.v6 else AF_INET,
            "skc_state": TCP_ESTABLISHED if connected else TCP_CLOSE,
            "skc_num": local[1],
            "skc_dport": _be16(remote[1]),
            "skc_net": {"net": ns.obj.addr},
        }
        if self.v6:
            for member, address in (("skc_v6_rcv_saddr", local[0]), ("skc_v6_daddr", remote[0])):
                common[member] = {
                    "in6_u": {"u6_addr8": list(ipaddress.IPv6Address(address).packed)}
                }
        else:
            common.update(skc_rcv_saddr=_be32(local[0]), skc_daddr=_be32(remote[0]))
        self.protocol = protocol or ("tcp" if owns_skbs else "udp")
        value: Dict[str, Any] = {"__sk_common": common}
        if world.has_member("struct sock", "sk_protocol"):
            value["sk_protocol"] = IPPROTO[self.protocol]
        tcp = self.protocol == "tcp" and world.has_type("struct tcp_sock")
        size = world.type("struct tcp_sock" if tcp else "struct sock").size
        self.obj = world.at(world.heap.alloc(size, 64), "struct sock", value)
        self.ofo_root = None
        if tcp:
            at = self.obj.addr + offsetof(world.type("struct tcp_sock"), "out_of_order_queue")
            self.ofo_root = world.at(at, "struct rb_root", {"rb_node": 0})
        self.ofo: List["FakeSkb"] = []
        self.queues = {name: world.list(self.obj, path) for name, path in self.QUEUES.items()}
        self.backlog: List["FakeSkb"] = []
        self.skbs: List[Tuple["FakeSkb", str]] = []
        self.tokens: Optional[FakeXArray] = None  # sk_user_frags, once it holds tokens
        world.before_commit(self._write)

    def queue(self, skb: "FakeSkb", which: str = "receive") -> "FakeSkb":
        """Queue ``skb`` on the receive or error queue, or the backlog."""
        skb.sock = self
        if which == "backlog":
            self.backlog.append(skb)
        elif which == "tcp-ofo":
            assert self.ofo_root is not None, "no out-of-order queue: not a TCP socket"
            self.ofo.append(skb)
        else:
            self.queues[which].add(skb.obj, "")
        self.skbs.append((skb, which))
        return skb

    def hold_tokens(self, niovs: Sequence["FakeNiov"]) -> List[int]:
        """
        ``recvmsg()`` of a devmem TCP receiver: each niov handed to user
        space under a token, its ``netmem_ref`` in ``sk_user_frags`` (an
        ALLOC1 XArray: tokens count from 1).  The niov's page-pool reference
        (a "stack" niov's) is then the token's: the skb that carried it is
        gone.
        :return: the tokens, in the order of ``niovs``.
        """
        if self.tokens is None:
            self.tokens = self.world.xarray(self.obj, "sk_user_frags")
        tokens = []
        for niov in niovs:
            token = max(self.tokens.entries, default=0) + 1
            self.tokens.entries[token] = niov.netmem
            tokens.append(token)
        return tokens

    def _write(self) -> None:
        for name, path in self.QUEUES.items():
            self.obj.set(f"{path}.qlen", len(self.queues[name].nodes))
        chain = [skb.obj.addr for skb in self.backlog]
        self.obj.set("sk_backlog.head", chain[0] if chain else 0)
        self.obj.set("sk_backlog.tail", chain[-1] if chain else 0)
        for skb, nxt in zip(self.backlog, chain[1:] + [0]):
            skb.obj.set("next", nxt)
        # The out-of-order rbtree: each skb the right child of the one before
        # (a valid binary tree; colours do not matter to a reader).
        if self.ofo_root is None:
            return
        rbnode = offsetof(self.world.type("struct sk_buff"), "rbnode")
        nodes = [skb.obj.addr + rbnode for skb in self.ofo]
        for i, skb in enumerate(self.ofo):
            parent = nodes[i - 1] if i else 0
            right = nodes[i + 1] if i + 1 < len(nodes) else 0
            skb.obj.set(
                "rbnode", {"__rb_parent_color": parent | 1, "rb_right": right, "rb_left": 0}
            )
        self.ofo_root.set("rb_node", nodes[0] if nodes else 0)

    def expected(self) -> Dict[str, Any]:
        """The socket as a holder row names it."""

        def name(address: str, port: int) -> str:
            return f"[{address}]:{port}" if self.v6 else f"{address}:{port}"

        remote = None if self.remote[1] == 0 else name(*self.remote)
        return {
            "sock": hex(self.obj.addr),
            "protocol": self.protocol
            if self.world.has_member("struct sock", "sk_protocol")
            else None,
            "family": "inet6" if self.v6 else "inet",
            "local": name(*self.local),
            "remote": remote,
            "netns": self.ns.inum,
        }


def _frag(world: "World", netmem: int, length: int) -> Dict[str, Any]:
    """An skb_frag_t: a netmem since Linux v6.9, a struct bio_vec before."""
    if world.has_member("struct skb_shared_info", "frags[0].netmem"):
        return {"netmem": netmem, "len": length, "offset": 0}
    return {"bv_page": netmem, "bv_len": length, "bv_offset": 0}


class FakeSkb:
    """
    A ``struct sk_buff`` holding ``frags`` (pages or niovs), with its head in
    the heap or, with ``head_page``, inside a page-pool page.
    """

    def __init__(
        self,
        world: "World",
        frags: Sequence[Holdable] = (),
        *,
        head_page: Optional[FakePage] = None,
        dev: Optional["NetDevice"] = None,
        headlen: int = 128,
        frag_len: int = 1500,
    ) -> None:
        self.world = world
        self.frags = list(frags)
        self.head_page = head_page
        self.dev = dev
        self.sock: Optional[FakeSocket] = None
        shinfo_size = world.type("struct skb_shared_info").size
        if head_page is not None:
            span = world.page_size << head_page.pool.order
            self.head = world.page_virt(head_page.pfn) + HEAD_FRAG_OFFSET
            end = span - HEAD_FRAG_OFFSET - shinfo_size
        else:
            self.head = world.alloc("char", count=HEAD_BUFFER + shinfo_size).addr
            end = HEAD_BUFFER
        self.shinfo = world.at(
            self.head + end,
            "struct skb_shared_info",
            {
                "nr_frags": len(self.frags),
                "dataref": {"counter": 1},
                "frags": [_frag(world, f.netmem, frag_len) for f in self.frags],
            },
        )
        data_len = frag_len * len(self.frags)
        self.obj = alloc_skb(
            world,
            {
                "len": headlen + data_len,
                "data_len": data_len,
                "head_frag": head_page is not None,
                "pp_recycle": True,
                "head": self.head,
                "data": self.head + NET_SKB_PAD,
                "tail": NET_SKB_PAD + headlen,
                "end": end,
                "truesize": end + shinfo_size + data_len,
                "users": {"refs": {"counter": 1}},
            },
        )
        world.before_commit(self._write)

    def _write(self) -> None:
        sock = self.sock
        self.obj.set("sk", sock.obj.addr if sock is not None and sock.owns_skbs else 0)
        if sock is not None and self in sock.ofo:
            return  # next, prev and dev are the rbnode's
        if sock is not None and not sock.owns_skbs:
            # UDP's dev_scratch (truesize, len, csum_unnecessary) overlays dev.
            self.obj.set("dev", 0x10000 << 32 | self.obj.value["truesize"])
        else:
            self.obj.set("dev", self.dev.obj.addr if self.dev is not None else 0)

    def holds(self, item: Holdable) -> List[Dict[str, Any]]:
        """What ``holders`` must report for ``item`` held by this skb."""
        rows = []
        for index, frag in enumerate(self.frags):
            if frag is item:
                rows.append(self._row("skb-frag", index))
        if item is self.head_page:
            rows.append(self._row("skb-head", None))
        return rows

    def _row(self, kind: str, frag: Optional[int]) -> Dict[str, Any]:
        sock = self.sock
        row: Dict[str, Any] = {"kind": kind, "skb": hex(self.obj.addr), "frag": frag}
        if sock is None:
            row.update(sock=None, queue=None)
        else:
            row.update(sock.expected())
            row["queue"] = next(which for skb, which in sock.skbs if skb is self)
        dev = self.dev if sock is None or (sock.owns_skbs and self not in sock.ofo) else None
        row["netdev"] = dev.name if dev is not None else None
        return row


def _pool_rows(world: "World", item: Holdable) -> List[Dict[str, Any]]:
    """The references a netmem's own pool keeps to it."""
    pool = item.pool
    rows: List[Dict[str, Any]] = []
    if pool is not None:  # not a device-less zcrx niov
        if item.netmem in pool.cache:
            rows.append({"kind": "pool-cache", "pool-id": pool.id})
        if item.netmem in pool.ring:
            rows.append({"kind": "pool-ring", "pool-id": pool.id})
        if item.netmem in pool.ring_stale:
            rows.append({"kind": "pool-ring-stale", "pool-id": pool.id})
        if isinstance(item, FakePage) and pool.dma_mapped.get(item.dma_index) == item.netmem:
            rows.append({"kind": "pool-dma-mapped", "pool-id": pool.id})
    if not isinstance(item, FakePage) and item.index == 0:
        # The area's niovs pointer is the address of its first niov.
        rows.append({"kind": "net-iov-area"})
    return rows


def _pool_niovs(pool: FakePagePool) -> List["FakeNiov"]:
    """The niovs a memory provider's pool has handed out (not free)."""
    provider = pool.provider
    if provider is None:
        return []
    # A devmem binding lists its niovs; a zcrx ifq has them per area.
    niovs = (
        provider.niovs
        if hasattr(provider, "niovs")
        else [n for area in provider.areas for n in area.niovs]
    )
    return [n for n in niovs if n.pool is pool and n.state != "free"]


def _provider_niovs(pool: FakePagePool) -> List["FakeNiov"]:
    """The niovs of a memory provider's pool that the stack holds."""
    return [n for n in _pool_niovs(pool) if n.state == "stack"]


def add_sockets(world: "World") -> None:
    """
    The holders part of the mixed scenario: sockets whose queues hold
    page-pool pages and net_iovs, a page back in a detached pool's ring, and
    pages nothing holds.  Uses the pools already in the world; records, at
    commit:

    - ``pages``: ``pages --all-pools --json``, every page-pool page by pfn;
    - ``holders``: ``[{"netmem": ..., "holders": [...]}]``, what
      ``holders NETMEM --json`` must report (every reference the model made);
    - ``leaks``: ``leaks --json`` over every detached pool: each in-flight
      page or niov with its verdict (``parked``, ``cached``, ``leaked``).
    """
    init = world.init_net
    pools = [p for p in world.pools if p.pages or _provider_niovs(p)]
    live = [p for p in pools if p.detach_time is None and p.provider is None]
    detached = [p for p in pools if p.detach_time is not None]
    tcp = FakeSocket(world, init, local=("10.0.2.15", 22), remote=("10.0.2.2", 51000))
    udp = FakeSocket(world, init, local=("10.0.2.15", 9000), owns_skbs=False)
    skbs: List[FakeSkb] = []
    touched: List[Holdable] = []

    def hold(
        sock: FakeSocket,
        which: str,
        frags: Sequence[Holdable] = (),
        head: Optional[FakePage] = None,
        dev: Optional["NetDevice"] = None,
    ) -> None:
        skbs.append(sock.queue(FakeSkb(world, frags, head_page=head, dev=dev), which))
        touched.extend(frags)
        if head is not None:
            touched.append(head)

    # A live NIC pool: pages in a TCP socket's receive and error queues.
    if live:
        nic = live[0].slow_netdev if not isinstance(live[0].slow_netdev, int) else None
        out = [p for p in live[0].pages if p.where == "out"]
        hold(tcp, "receive", out[:2], dev=nic)
        hold(tcp, "receive", head=out[2], dev=nic)
        hold(tcp, "error", out[3:4], dev=nic)
        touched += [p for p in live[0].pages if p.where in ("cache", "ring")][:2]
        touched += [p for p in live[0].pages if p.netmem in live[0].ring_stale][:1]
    # Detached pools: parked in sockets, back in the ring, or leaked.
    for n, pool in enumerate(detached):
        out = [p for p in pool.pages if p.where == "out"]
        touched += out
        if n == 0 and len(out) >= 4:
            hold(udp, "receive", out[:2])
            hold(udp, "receive", head=out[2])
        elif n == 1 and len(out) >= 3:
            other = [ns for ns in world.namespaces if ns.alive and ns is not init]
            ns_sock = FakeSocket(
                world,
                other[0] if other else init,
                local=("192.168.7.1", 8080),
                remote=("192.168.7.2", 40000),
            )
            hold(ns_sock, "receive", out[:1])
            hold(ns_sock, "backlog", out[1:2])
            pool.recycle_to_ring(out[2])
        elif n == 2 and out:
            hold(tcp, "error", out[:1])
            # Every verdict in one pool (the user guide's story): a page
            # back in the ring between two runs of the release work.
            if len(out) >= 3:
                pool.recycle_to_ring(out[1])
    # Memory providers' net_iovs held in TCP skb frags (devmem TCP); the
    # last one of a detached pool is held by nobody.
    for pool in world.pools:
        niovs = _provider_niovs(pool)
        if not niovs:
            continue
        touched += niovs
        held = niovs[:-1] if pool.detach_time is not None else niovs[:2]
        if held:
            hold(tcp, "receive", held)

    def record() -> None:
        holders = []
        for item in dict.fromkeys(touched):
            rows = _pool_rows(world, item) + [r for skb in skbs for r in skb.holds(item)]
            holders.append({"netmem": hex(item.netmem), "holders": rows})
        world.expected["holders"] = holders
        world.expected["leaks"] = _expected_leaks(world, skbs)
        world.expected["pages"] = _expected_pages(world)

    world.before_commit(record)


def _expected_pages(world: "World") -> List[Dict[str, Any]]:
    pages = sorted((page for pool in world.pools for page in pool.pages), key=lambda p: p.pfn)
    return [
        {
            "pfn": page.pfn,
            "page": hex(page.netmem),
            "pool-id": page.pool.id,
            "pool": hex(page.pool.obj.addr),
            "pp-ref-count": page.pp_ref_count,
            "refcount": page.refcount,
            "dma-index": page.dma_index if world.has_dma_index else None,
            "where": page.where,
        }
        for page in pages
    ]


def _expected_leaks(world: "World", skbs: List[FakeSkb]) -> List[Dict[str, Any]]:
    rows = []
    for pool in sorted(world.pools, key=lambda p: (p.id or 0, p.obj.addr)):
        if pool.detach_time is None:
            continue
        items: List[Holdable] = [p for p in pool.pages]
        items += _pool_niovs(pool)
        for item in items:
            held = [r for skb in skbs for r in skb.holds(item)]
            in_pool = [
                r for r in _pool_rows(world, item) if r["kind"] in ("pool-cache", "pool-ring")
            ]
            user = not isinstance(item, FakePage) and item.state == "user"
            verdict = "parked" if held or user else ("cached" if in_pool else "leaked")
            rows.append(
                {
                    "pool-id": pool.id,
                    "netmem": hex(item.netmem),
                    "kind": "page" if isinstance(item, FakePage) else "net_iov",
                    "verdict": verdict,
                    "evidence": in_pool + held,
                }
            )
    return rows

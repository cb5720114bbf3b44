"""
devmem TCP
----------

Since Linux 6.12 a dma-buf can be bound to rx queues (``NETDEV_CMD_BIND_RX``;
TX bindings since 6.16): its ``struct net_devmem_dmabuf_binding`` carves the
dma-buf into genpool chunks, each owning an array of ``struct net_iov``.
These helpers find the bindings and read each one as a
:class:`~netmem_probe.kernel.areas.ProviderArea`.
"""

from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.areas import MAX_NIOVS, MAX_RX_QUEUES, AreaReader, NiovSpan, ProviderArea
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import Problems, list_nodes, wrap, xa_entries, xa_slots

__all__ = (
    "BindingReader",
    "DevmemToken",
    "DevmemTokens",
    "binding_sockets",
    "dmabuf_bindings_xarray",
)

DMA_TO_DEVICE = 1
IPPROTO_TCP = 6
#: AF_INET, AF_INET6: the families of a TCP socket.
INET_FAMILIES = (2, 10)
#: Tokens followed in one socket's ``sk_user_frags`` before it is reported
#: as corrupt: one per net_iov a receiver holds, and a dma-buf has at most
#: MAX_NIOVS niovs per chunk.
MAX_TOKENS = 1 << 20


def dmabuf_bindings_xarray(prog: Program) -> Optional[int]:
    """Address of the ``net_devmem_dmabuf_bindings`` XArray, or None without devmem."""
    for kwargs in ({"filename": "devmem.c"}, {}):
        try:
            return prog.object("net_devmem_dmabuf_bindings", **kwargs).address_
        except (LookupError, ValueError):
            continue
    return None


def binding_sockets(prog: Program, problems: Problems) -> Optional[Dict[int, int]]:
    """
    binding address -> the ``struct sock`` of the netlink socket that bound
    it (``NETDEV_CMD_BIND_RX``/``BIND_TX``).  The netdev family keeps each
    socket's private data in ``netdev_nl_family.sock_privs``, an XArray keyed
    by the ``struct sock`` address (since Linux kernel commit a731132424ad
    ("genetlink: introduce per-sock family private storage") (in v6.8)), and
    the binding sits on that data's ``bindings`` list by its ``list``; the
    socket's release unbinds it.  A binding on no socket's list has been
    unbound.  None when the kernel has no such storage (before devmem, or no
    ``netdev_nl_family`` symbol).
    """
    try:
        family = prog.object("netdev_nl_family")
        privs = family.sock_privs.value_()
        list_at = drgn.offsetof(prog.type("struct net_devmem_dmabuf_binding"), "list")
    except (LookupError, AttributeError):
        return None
    except drgn.FaultError as e:
        problems.fault("netdev_nl_family", e.address, e)
        return None
    # Since Linux kernel commit b6b67141d6f1 ("net: create netdev_nl_sock to
    # wrap bindings list") (in v6.15) the private data is a struct
    # netdev_nl_sock; before (v6.12-v6.14), the bindings' list_head itself.
    try:
        bindings_at = drgn.offsetof(prog.type("struct netdev_nl_sock"), "bindings")
    except LookupError:
        bindings_at = 0
    sockets: Dict[int, int] = {}
    if not privs:  # no socket has used the family yet
        return sockets
    for sk, priv in xa_entries(prog, privs, what="netdev_nl_family sock_privs", problems=problems):
        for node in list_nodes(
            prog, priv + bindings_at, what="netlink socket bindings", problems=problems
        ):
            sockets[node - list_at] = sk
    return sockets


class BindingReader(AreaReader):
    """Reads dma-buf bindings, each as one area with a span per genpool chunk."""

    def read(self, address: int) -> Optional[ProviderArea]:
        """The binding at ``address`` (a ``net_devmem_dmabuf_binding *``); None if unreadable."""
        prog = self.prog
        reader = StructReader(
            prog,
            "struct net_devmem_dmabuf_binding",
            {
                "dmabuf": "dmabuf",
                "dev": "dev",
                "chunk_pool": "chunk_pool",
                "id": "id",
                # refcount_t until the binding's ref became a percpu_ref (7.2+).
                "ref": "ref.refs.counter",
                # Since the devmem TX series (v6.16).
                "direction": "direction",
                # Since Linux 7.3 (rx-page-size).
                "niov_shift": "niov_shift",
            },
        )
        try:
            b = reader.read(address)
        except drgn.FaultError as e:
            self.problems.fault("dmabuf binding", address, e)
            return None
        shift = b["niov_shift"] if b["niov_shift"] is not None else self.page_shift
        if not self.page_shift <= shift < 32:
            self.problems.add("dmabuf binding", address, f"impossible niov_shift {shift}")
            return None
        size = None
        if b["dmabuf"]:
            try:
                size = prog.read_u64(
                    wrap(b["dmabuf"] + drgn.offsetof(prog.type("struct dma_buf"), "size"))
                )
            except drgn.FaultError as e:
                self.problems.fault("dma_buf", b["dmabuf"], e)
        pool_ids, pool_addresses = self._pool_fields(address, "dmabuf")
        return ProviderArea(
            kind="dmabuf",
            id=b["id"],
            address=address,
            ifq=None,
            netdev=self._netdev(b["dev"]),
            queues=self._bound_queues(address),
            pools=pool_ids,
            pool_addresses=pool_addresses,
            refcount=b["ref"],
            direction="tx" if b["direction"] == DMA_TO_DEVICE else "rx",
            niov_shift=shift,
            size=size,
            spans=self._chunks(address, b["chunk_pool"], shift),
        )

    def _bound_queues(self, binding: int) -> Tuple[int, ...]:
        """Indexes of the rx queues in ``binding->bound_rxqs``."""
        prog = self.prog
        offset = drgn.offsetof(prog.type("struct net_devmem_dmabuf_binding"), "bound_rxqs")
        rxq_type = prog.type("struct netdev_rx_queue")
        rxq_dev = drgn.offsetof(rxq_type, "dev")
        dev_rx = drgn.offsetof(prog.type("struct net_device"), "_rx")
        queues = []
        for _, rxq in xa_entries(
            prog, binding + offset, what="binding bound_rxqs", problems=self.problems
        ):
            try:
                # get_netdev_rx_queue_index(): rxq - rxq->dev->_rx
                rx = prog.read_word(wrap(prog.read_word(wrap(rxq + rxq_dev)) + dev_rx))
            except drgn.FaultError as e:
                self.problems.fault("bound rx queue", rxq, e)
                continue
            index, rest = divmod(rxq - rx, rxq_type.size)
            if rest or not 0 <= index < MAX_RX_QUEUES:
                self.problems.add("bound rx queue", rxq, "not an element of its netdev's _rx[]")
                continue
            queues.append(index)
        return tuple(sorted(queues))

    def _chunks(self, binding: int, gen_pool: int, shift: int) -> Tuple[NiovSpan, ...]:
        """The niov arrays of a binding's genpool chunks, in dma-buf order."""
        prog = self.prog
        if not gen_pool:
            return ()
        pool_type = prog.type("struct gen_pool")
        chunk_type = prog.type("struct gen_pool_chunk")
        owner_type = prog.type("struct dmabuf_genpool_chunk_owner")
        chunk_reader = StructReader(
            prog,
            "struct gen_pool_chunk",
            {"owner": "owner", "start_addr": "start_addr", "end_addr": "end_addr"},
        )
        # Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov
        # chunk owners") (in v6.15) the niov array is the owner's struct
        # net_iov_area; before, three members of the owner itself.
        area = "area." if member_exists(owner_type, "area") else ""
        owner_reader = StructReader(
            prog,
            "struct dmabuf_genpool_chunk_owner",
            {
                "niovs": area + "niovs",
                "num_niovs": area + "num_niovs",
                "base_virtual": area + "base_virtual",
                "binding": "binding",
            },
        )
        area_offset = drgn.offsetof(owner_type, "area") if area else 0
        bits = drgn.offsetof(chunk_type, "bits")
        node_offset = drgn.offsetof(chunk_type, "next_chunk")
        head = gen_pool + drgn.offsetof(pool_type, "chunks")
        spans = []
        for node in list_nodes(prog, head, what="gen_pool chunks", problems=self.problems):
            chunk = node - node_offset
            try:
                c = chunk_reader.read(chunk)
            except drgn.FaultError as e:
                self.problems.fault("gen_pool_chunk", chunk, e)
                continue
            try:
                o = owner_reader.read(c["owner"])
            except drgn.FaultError as e:
                self.problems.add(
                    "gen_pool_chunk",
                    chunk,
                    f"owner pointer {c['owner']:#x} leads nowhere ({e.message})",
                )
                continue
            if o["binding"] != binding:
                self.problems.add(
                    "dmabuf chunk owner",
                    c["owner"],
                    f"belongs to binding {o['binding']:#x}, not {binding:#x}",
                )
                continue
            nbits = (c["end_addr"] - c["start_addr"] + 1) >> shift
            if o["num_niovs"] != nbits or not 0 < nbits <= MAX_NIOVS:
                self.problems.add(
                    "dmabuf chunk owner",
                    c["owner"],
                    f"{o['num_niovs']} niovs for a chunk of {nbits}",
                )
                continue
            spans.append(
                NiovSpan(
                    owner=c["owner"] + area_offset,
                    niovs=o["niovs"],
                    count=nbits,
                    base_virtual=o["base_virtual"],
                    chunk=None,
                    bitmap=chunk + bits,
                )
            )
        spans.sort(key=lambda s: s.base_virtual)
        return tuple(
            NiovSpan(s.owner, s.niovs, s.count, s.base_virtual, i, s.bitmap)
            for i, s in enumerate(spans)
        )


class DevmemToken(NamedTuple):
    """A net_iov a devmem TCP receiver holds through a token."""

    sk: int  # the struct sock whose sk_user_frags holds it
    token: int  # the SO_DEVMEM_* token user space got for it (its XArray index)
    slot: int  # the address of the XArray slot holding the netmem_ref
    netmem: int


class DevmemTokens:
    """
    The net_iovs devmem TCP receivers hold through tokens, found in the
    ``sk_user_frags`` XArray of the sockets given (the processes' open
    sockets, :meth:`~netmem_probe.kernel.actors.SocketOwners.sockets`).

    ``tcp_recvmsg_dmabuf()`` hands each net_iov frag to user space with a
    token, takes a page-pool reference on it and keeps its ``netmem_ref`` in
    ``sk->sk_user_frags`` under that token (an ALLOC1 XArray: tokens from
    1); ``SO_DEVMEM_DONTNEED`` erases tokens and drops their references, and
    ``tcp_v4_destroy_sock()`` drops the ones left when the socket is
    destroyed.  Since Linux kernel commit 8f0b3cc9a4c1 ("tcp: RX path for
    devmem TCP") (in v6.12); still a ``struct xarray`` in ``struct sock`` in
    Debian's 7.3.4.  ``available`` is False on a kernel without it.

    Each socket's ``xa_head`` is read once; only a TCP socket's non-empty
    XArray is walked, bounded, and a node that does not fit its tree is
    reported and not followed.  A socket no process has open (an orphaned
    TCP socket keeps its tokens until it is destroyed) is found from a slot
    by :meth:`at`.
    """

    def __init__(self, prog: Program, problems: Problems, sockets: Iterable[int]) -> None:
        self.prog = prog
        self.problems = problems
        # A net_iov cut into frags can be out under several tokens.
        self.by_netmem: Dict[int, List[DevmemToken]] = {}
        self.by_slot: Dict[int, DevmemToken] = {}
        sock = prog.type("struct sock")
        frags = sock.member("sk_user_frags") if member_exists(sock, "sk_user_frags") else None
        self.available = frags is not None and frags.type.unaliased().type_name() == "struct xarray"
        if not self.available:
            return
        self.frags_at = drgn.offsetof(sock, "sk_user_frags")
        node = prog.type("struct xa_node")
        self.node_slots = drgn.offsetof(node, "slots")
        self.node_shift = drgn.offsetof(node, "shift")
        self.node_array = drgn.offsetof(node, "array")
        self.chunk = node.member("slots").type.length or 0
        self.word = drgn.sizeof(prog.type("void *"))
        self._walked: Set[int] = set()
        self.reader = StructReader(
            prog,
            "struct sock",
            {
                "family": "__sk_common.skc_family",
                "protocol": "sk_protocol",
                "head": "sk_user_frags.xa_head",
            },
        )
        for sk in sockets:
            self._walk(sk, problems)

    def _walk(self, sk: int, problems: Optional[Problems]) -> None:
        """Add the tokens of the socket at ``sk`` if it is a TCP socket (faults to ``problems``)."""
        self._walked.add(sk)
        try:
            f = self.reader.read(sk)
        except drgn.FaultError as e:
            if problems is not None:
                problems.fault("socket", sk, e)
            return
        if not f["head"] or f["family"] not in INET_FAMILIES or f["protocol"] != IPPROTO_TCP:
            return
        slots = xa_slots(
            self.prog,
            sk + self.frags_at,
            what="TCP socket sk_user_frags",
            problems=problems,
            limit=MAX_TOKENS,
        )
        for token, netmem, slot in slots:
            held = DevmemToken(sk, token, slot, netmem)
            self.by_netmem.setdefault(netmem, []).append(held)
            self.by_slot[slot] = held

    def at(self, address: int) -> Optional[DevmemToken]:
        """
        The token whose XArray slot is at ``address``: among the sockets
        walked, else in the socket whose ``sk_user_frags`` owns the leaf node
        the slot would lie in (``xa_node->array`` points back at the XArray),
        walked to confirm it: a TCP socket no process has open.  None if the
        word is no token's slot.
        """
        token = self.by_slot.get(address)
        if token is not None or not self.available:
            return token
        for slot in range(self.chunk):
            node = address - self.node_slots - slot * self.word
            try:
                shift = self.prog.read_u8(wrap(node + self.node_shift))
                array = self.prog.read_word(wrap(node + self.node_array))
            except drgn.FaultError:
                continue
            sk = array - self.frags_at
            if shift or array <= self.frags_at or sk in self._walked:
                continue
            # A guess until the walk finds the slot: what it meets is not reported.
            self._walk(sk, None)
            token = self.by_slot.get(address)
            if token is not None:
                return token
        return None

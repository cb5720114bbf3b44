"""
Holders
-------

Who references a page or a net_iov.  Kernel memory (every valid RAM range,
read through the direct map) is searched for the words that name it: its
``netmem_ref``, its ``struct page`` or ``struct net_iov`` address, and for a
page any pointer into its memory.  Each hit is then classified:

- ``skb-frag``: a ``frags[i].netmem`` of a ``struct skb_shared_info``, whose
  ``struct sk_buff`` is found by a second search for the ``skb->head`` that
  puts the shared info there (``head + end``);
- ``skb-head``: ``skb->head``/``skb->data`` of an skb whose head lives in the
  page (``head_frag``);
- ``pool-cache``, ``pool-ring``, ``pool-frag-page``: the pool's own alloc
  cache, ptr_ring or fragment page; ``pool-ring-stale`` and
  ``pool-cache-stale`` for consumed slots not yet cleared, and
  ``pool-dma-mapped`` for the pool's ``dma_mapped`` XArray (bookkeeping,
  not a holder);
- ``rx-ring``: a slot of a driver's rx ring (see
  :mod:`netmem_probe.kernel.drivers`), "<driver> <netdev> rx queue N, slot S";
  an skb that sits in such a ring (veth's ``xdp_ring``) names the slot too;
- ``net-iov-area``: the area that owns a net_iov;
- ``static-data``: a word of the kernel image's or a module's static data
  (:mod:`netmem_probe.kernel.statics`), named by its symbol: "pp_test:
  held[3]";
- ``devmem-token``: a slot of a TCP socket's ``sk_user_frags``: a devmem
  TCP receiver holds the net_iov under that token
  (:class:`~netmem_probe.kernel.devmem.DevmemTokens`);
- ``unknown``: anything else: in a slab object, the cache, object and
  member (:mod:`netmem_probe.kernel.slab`) and what points at that object;
  elsewhere as drgn's ``identify_address()`` describes it.

For skbs, the socket whose queue (receive, error, backlog) holds them is
found from the queue itself, since UDP leaves ``skb->sk`` NULL.  An skb on no
socket may wait on a CPU (backlog, completion queue, defer list), in a qdisc
or in a GRO list; one in the NAPI cache of released sk_buffs holds nothing.
"""

import bisect
import dataclasses
import ipaddress
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.actors import (
    TCP_STATES,
    Owner,
    SocketOwners,
    release_action,
    token_release,
)
from netmem_probe.kernel.decode import decode_net_iov
from netmem_probe.kernel.devmem import DevmemToken, DevmemTokens
from netmem_probe.kernel.drivers import RxRings, RxSlot
from netmem_probe.kernel.netdev import NetdevReader
from netmem_probe.kernel.netmem import NET_IOV, decode_page, memmap_description
from netmem_probe.kernel.page_pool import (
    MAX_PAGE_ORDER,
    PagePoolInfo,
    PagePoolScanner,
)
from netmem_probe.kernel.platform import byte_order, page_shift, word_format, word_size
from netmem_probe.kernel.qdisc import Qdiscs
from netmem_probe.kernel.queues import GroLists, TcpOfoQueue
from netmem_probe.kernel.search import SearchOptions, direct_map_base, search_words
from netmem_probe.kernel.skbs import SkbSlabs
from netmem_probe.kernel.slab import (
    SlabObjects,
    SlabPlace,
    describe,
    page_place,
    referrers,
    slab_place,
)
from netmem_probe.kernel.softnet import CpuQueues
from netmem_probe.kernel.statics import StaticData, StaticPlace
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import Problems, wrap

__all__ = (
    "POOL_KINDS",
    "RING_KINDS",
    "STATIC_KIND",
    "SKB_KINDS",
    "SKB_QUEUES",
    "TOKEN_KINDS",
    "RELEASED_SKB_QUEUE",
    "Holder",
    "HolderSearch",
    "SockInfo",
    "NetmemTarget",
    "make_target",
    "page_target",
)

#: How far below its skb_shared_info an skb's head may start (``end``).
MAX_SKB_END = 64 << 10
#: skbs followed along a queue before giving up.
MAX_QUEUE_STEPS = 1 << 16
# References kept per target; a page has a handful.  Millions of hits mean
# a span that covers everything (a corrupt page_offset_base makes a page's
# direct-map span start at 0), and each hit costs reads to classify.
MAX_REFERENCES = 1 << 12
#: Socket families a queue head may belong to (AF_UNIX, AF_INET, AF_INET6,
#: AF_NETLINK, AF_PACKET, AF_XDP).
FAMILIES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet", 44: "xdp"}
#: IP protocols named in ``ss`` filters.
PROTOCOLS = {6: "tcp", 17: "udp"}
SKB_KINDS = ("skb-frag", "skb-head")
#: Queues of skbs that are no socket's: per CPU (:mod:`~netmem_probe.kernel.softnet`),
#: qdiscs (:mod:`~netmem_probe.kernel.qdisc`) and NAPI GRO lists.
SKB_QUEUES = ("backlog", "completion-queue", "defer-list", "qdisc", "gro")
#: The NAPI cache of released sk_buffs: an skb there holds nothing.
RELEASED_SKB_QUEUE = "napi-cache"
POOL_KINDS = ("pool-cache", "pool-ring", "pool-frag-page")
RING_KINDS = ("rx-ring",)
#: A word of the kernel's or a module's static data.
STATIC_KIND = "static-data"
#: User space holds it: a devmem TCP token.
TOKEN_KINDS = ("devmem-token",)


@dataclass(frozen=True)
class NetmemTarget:
    """A page or net_iov to find references to."""

    netmem: int
    kind: str  # "page" or "net_iov"
    address: int  # struct page or struct net_iov
    words: Tuple[int, ...]  # values that name it
    span: Optional[Tuple[int, int]]  # a page's memory in the direct map [lo, hi)
    pool: Optional[int]
    pool_id: Optional[int]
    owner: Optional[int]  # a net_iov's area


@dataclass(frozen=True)
class SockInfo:
    address: int
    family: str
    local: Optional[str]
    remote: Optional[str]
    netns: Optional[int]
    protocol: Optional[str] = None  # "tcp", "udp", or the IP protocol number
    state: Optional[str] = None  # a TCP socket's state


@dataclass(frozen=True)
class Holder:
    """One reference to a target."""

    kind: str
    address: int  # where the reference is
    value: int  # the word found there
    skb: Optional[int] = None
    frag: Optional[int] = None
    sock: Optional[SockInfo] = None
    queue: Optional[str] = None
    netdev: Optional[str] = None
    pool_id: Optional[int] = None
    detail: Optional[str] = None
    rx_slot: Optional[RxSlot] = None  # the driver rx ring slot holding it (or its skb)
    slab: Optional[SlabPlace] = None  # the slab object an unknown reference lies in
    pointed_from: Optional[Tuple[str, ...]] = None  # places pointing at that object
    owners: Optional[Tuple[Owner, ...]] = None  # processes with the skb's socket open
    release: Optional[str] = None  # the command that would release it
    static: Optional[StaticPlace] = None  # the static data the reference lies in
    token: Optional[int] = None  # the devmem TCP token user space holds it by

    @property
    def holds(self) -> bool:
        """
        Whether this reference keeps the target in use: an skb's, or a live
        slot of its pool's cache, ring or fragment page (not bookkeeping, not
        a stale slot, not an unidentified word), a driver's rx ring slot, a
        word of the kernel's or a module's static data, or a devmem TCP token.
        """
        return (
            self.kind in POOL_KINDS
            or self.kind in RING_KINDS
            or self.kind == STATIC_KIND
            or self.kind in TOKEN_KINDS
            or (
                self.kind in SKB_KINDS and self.skb is not None and self.queue != RELEASED_SKB_QUEUE
            )
        )


def make_target(prog: Program, value: int, problems: Problems) -> Optional[NetmemTarget]:
    """
    The target a command-line value names: a net_iov ``netmem_ref`` (bit 0
    set, if it decodes as one), a page ``netmem_ref`` (a ``struct page``
    address), or an address in the direct map (the page it lies in).

    :return: None if the kernel's memmap or direct map base cannot be read,
        so the value cannot be told (recorded in ``problems``).
    :raises ValueError: if ``value`` names none of these.
    """
    niov_problem = None
    if value & NET_IOV:
        niov = decode_net_iov(prog, value)
        if not niov.problem:
            return NetmemTarget(
                value,
                "net_iov",
                niov.niov,
                (value, niov.niov),
                None,
                niov.pool,
                niov.pool_id,
                niov.owner,
            )
        # Not a net_iov: an odd address in the direct map still names a page.
        niov_problem = niov.problem
    memmap = memmap_description(prog, problems)
    base = direct_map_base(prog, problems)
    if memmap is None or base is None:
        return None
    shift = page_shift(prog)
    pfn = (value - base) >> shift
    if value >= base and any(start <= pfn < end for start, end in memmap.ranges):
        value = memmap.vmemmap + pfn * drgn.sizeof(prog.type("struct page"))
    info = decode_page(prog, value, problems)
    if info.pfn is None or info.refcount is None:
        raise ValueError(
            f"{value:#x} is not a netmem_ref, struct page or direct-map "
            f"address ({niov_problem or info.problem})"
        )
    order = 0
    if info.pool is not None:
        try:
            order = prog.read_u8(
                wrap(info.pool + drgn.offsetof(prog.type("struct page_pool"), "p.order"))
            )
        except drgn.FaultError:
            pass
    # An impossible order is a corrupt pool: look at the head page alone.
    order = order if order <= MAX_PAGE_ORDER else 0
    return page_target(prog, info.pfn, value, info.pool, info.pool_id, order, problems)


def page_target(
    prog: Program,
    pfn: int,
    page: int,
    pool: Optional[int],
    pool_id: Optional[int],
    order: int,
    problems: Optional[Problems] = None,
) -> NetmemTarget:
    """
    The target for the ``struct page`` at ``page`` (pfn ``pfn``, of ``2**order``
    pages).  Without a readable direct map base it has no span: pointers into
    the page cannot be told, only the page's own words searched.
    """
    shift = page_shift(prog)
    base = direct_map_base(prog, problems if problems is not None else Problems())
    span = None
    if base is not None:
        start = base + (pfn << shift)
        span = (start, start + (1 << (shift + order)))
    return NetmemTarget(page, "page", page, (page,), span, pool, pool_id, None)


class HolderSearch:
    """
    Finds and classifies the references to targets.

    :param prog: the target program.
    :param problems: collects unreadable or inconsistent objects.
    :param pools: the pools, by address (read with a
        :class:`~netmem_probe.kernel.page_pool.PagePoolScanner` if not given).
    :param search: how to search RAM (processes, progress).
    """

    def __init__(
        self,
        prog: Program,
        problems: Problems,
        pools: Optional[Dict[int, PagePoolInfo]] = None,
        search: Optional[SearchOptions] = None,
    ) -> None:
        self.prog = prog
        self.problems = problems
        self.search = search or SearchOptions()
        if pools is None:
            pools = {info.address: info for info in PagePoolScanner(prog, problems).pools()}
        self.pools = pools
        # skb->dev may be UDP's dev_scratch: a bad pointer there is no problem.
        self.netdevs = NetdevReader(prog, Problems())
        self.skb_reader = StructReader(
            prog,
            "struct sk_buff",
            {
                "next": "next",
                "prev": "prev",
                "sk": "sk",
                "dev": "dev",
                "len": "len",
                "data_len": "data_len",
                "tail": "tail",
                "end": "end",
                "head": "head",
                "data": "data",
                "users": "users.refs.counter",
            },
        )
        self.shinfo_reader = StructReader(
            prog, "struct skb_shared_info", {"nr_frags": "nr_frags", "dataref": "dataref.counter"}
        )
        shinfo = prog.type("struct skb_shared_info")
        frags = shinfo.member("frags").type.unaliased()
        frag = frags.type
        self.frags_offset = drgn.offsetof(shinfo, "frags")
        self.max_frags = frags.length
        self.frag_size = drgn.sizeof(frag)
        # Since Linux kernel commit 21d2e6737c97 ("net: add netmem to
        # skb_frag_t") (in v6.9) a frag holds a netmem_ref; before, the frag's
        # bv_page is the same struct page pointer.
        self.frag_netmem = drgn.offsetof(
            frag, "netmem" if member_exists(frag, "netmem") else "bv_page"
        )
        self.word = word_format(prog)
        self.word_size = word_size(prog)
        self.byte_order = byte_order(prog)
        sock = prog.type("struct sock")
        self.sock_reader = StructReader(
            prog,
            "struct sock",
            {
                "family": "__sk_common.skc_family",
                "daddr": "__sk_common.skc_daddr",
                "saddr": "__sk_common.skc_rcv_saddr",
                "dport": "__sk_common.skc_dport",
                "num": "__sk_common.skc_num",
                "net": "__sk_common.skc_net.net",
                "state": "__sk_common.skc_state",
                "protocol": "sk_protocol",
                "backlog": "sk_backlog.head",
            },
        )
        common = prog.type("struct sock_common")
        # IPv6 addresses (CONFIG_IPV6), sliced from the bytes as they are.
        v6_names = ("skc_v6_rcv_saddr", "skc_v6_daddr")
        self.v6_offsets: Optional[Tuple[int, ...]] = None
        if all(member_exists(common, name) for name in v6_names):
            self.v6_offsets = tuple(drgn.offsetof(sock, "__sk_common." + n) for n in v6_names)
        self.queue_offsets = [
            ("receive", drgn.offsetof(sock, "sk_receive_queue")),
            ("error", drgn.offsetof(sock, "sk_error_queue")),
        ]
        # A UDP socket's reader takes what has arrived from sk_receive_queue
        # all at once into its own reader_queue, since Linux kernel commit
        # 2276f58ac589 ("udp: use a separate rx queue for packet reception")
        # (in v4.11): datagrams received, not read yet, as the other.
        try:
            udp_sock = prog.type("struct udp_sock")
            self.queue_offsets.append(("receive", drgn.offsetof(udp_sock, "reader_queue")))
        except LookupError:
            pass
        self.qlen_offset = drgn.offsetof(prog.type("struct sk_buff_head"), "qlen")
        self.inum_offset = drgn.offsetof(prog.type("struct net"), "ns.inum")
        pool_type = prog.type("struct page_pool")
        # The page being cut into fragments (page_pool_alloc_frag(), v5.15+).
        self.frag_page_offset = (
            drgn.offsetof(pool_type, "frag_page") if member_exists(pool_type, "frag_page") else None
        )
        # Since Linux kernel commit ee62ce7a1d90 ("page_pool: Track DMA-mapped
        # pages and unmap them when destroying the pool") (in v6.15).
        self.dma_mapped_offset = (
            drgn.offsetof(pool_type, "dma_mapped")
            if member_exists(pool_type, "dma_mapped")
            else None
        )
        node = prog.type("struct xa_node")
        self.xa_slots = drgn.offsetof(node, "slots")
        self.xa_array = drgn.offsetof(node, "array")
        self.xa_shift = drgn.offsetof(node, "shift")
        self.xa_chunk = node.member("slots").type.length
        self.xa_head = drgn.offsetof(prog.type("struct xarray"), "xa_head")
        self._pool_index = self._index_pools()
        self._pool_starts = [entry[0] for entry in self._pool_index]
        self._sockets: Dict[int, Tuple[Optional[SockInfo], Optional[str]]] = {}
        self._identify_cache: Dict[object, object] = {}
        self._slab_objects = SlabObjects(prog)  # slab free lists, read once per search
        self.rx_rings = RxRings(prog, problems)
        self.tcp_ofo = TcpOfoQueue(prog, problems)
        self.gro = GroLists(prog, problems)
        self.cpu_queues = CpuQueues(prog, problems)
        self.statics = StaticData(prog, problems)  # mapped on the first unknown reference
        self.qdiscs = Qdiscs(prog, problems)
        self.owners = SocketOwners(prog, problems)
        self._tokens: Optional[DevmemTokens] = None
        try:
            self.init_netns: Optional[int] = prog["init_net"].ns.inum.value_()
        except (LookupError, drgn.FaultError):
            self.init_netns = None
        self._valid_cache: Optional[Tuple[SkbSlabs, List[Tuple[int, Dict[str, int]]]]] = None

    # -- the pools' own structures -------------------------------------------

    def _index_pools(self) -> List[Tuple[int, int, str, PagePoolInfo, Set[int]]]:
        """(start, end, kind, pool, live slot addresses) of each pool array, sorted."""
        index = []
        for info in self.pools.values():
            cache = info.alloc_cache
            live = {cache.slot_address(i) for i in range(cache.count)}
            index.append((cache.address, cache.end, "pool-cache", info, live))
            ring = info.ring
            if ring.queue and ring.size > 0:
                try:
                    slots = ring.slots(self.prog)
                except drgn.FaultError as e:
                    self.problems.fault("page pool ring", info.address, e)
                    continue
                live = {ring.slot_address(slot) for slot in slots}
                index.append((ring.queue, ring.end, "pool-ring", info, live))
        index.sort(key=lambda entry: entry[0])
        return index

    def _pool_holder(self, address: int, value: int) -> Optional[Holder]:
        i = bisect.bisect_right(self._pool_starts, address) - 1
        if i >= 0:
            start, end, kind, info, live = self._pool_index[i]
            if address < end:
                return Holder(
                    kind if address in live else kind + "-stale", address, value, pool_id=info.id
                )
        for info in self.pools.values():
            if self.frag_page_offset is not None and address == info.address + (
                self.frag_page_offset
            ):
                return Holder("pool-frag-page", address, value, pool_id=info.id)
        return None

    def _dma_mapped_holder(
        self, target: NetmemTarget, address: int, value: int
    ) -> Optional[Holder]:
        """The page's slot in its pool's ``dma_mapped`` XArray (v6.15+), if the hit is it."""
        info = self.pools.get(target.pool) if target.pool else None
        if info is None or self.dma_mapped_offset is None or target.kind != "page":
            return None
        xa = info.address + self.dma_mapped_offset
        index = decode_page(self.prog, target.address).dma_index
        if not index:
            return None
        if address == xa + self.xa_head:
            return Holder("pool-dma-mapped", address, value, pool_id=info.id)
        node = address - self.xa_slots - self.word_size * (index % self.xa_chunk)
        try:
            shift = self.prog.read_u8(wrap(node + self.xa_shift))
            array = self.prog.read_word(wrap(node + self.xa_array))
        except drgn.FaultError:
            return None
        if shift == 0 and array == xa:
            return Holder("pool-dma-mapped", address, value, pool_id=info.id)
        return None

    # -- skbs ----------------------------------------------------------------

    def _read_skb(self, address: int) -> Optional[Dict[str, int]]:
        """An ``sk_buff`` at ``address`` if it is self-consistent, else None."""
        try:
            skb = self.skb_reader.read(address)
        except drgn.FaultError:
            return None
        if not skb["head"] or not skb["end"] or skb["end"] > 1 << 20:
            return None
        if not skb["head"] <= skb["data"] <= skb["head"] + skb["end"]:
            return None
        if skb["tail"] > skb["end"] or skb["data_len"] > skb["len"]:
            return None
        if not 0 < skb["users"] < 1 << 20:
            return None
        return skb

    def _shinfo_frag(self, address: int, value: int) -> Optional[Tuple[int, int]]:
        """``(skb_shared_info address, frag index)`` if the word at ``address`` is a frag netmem."""
        for index in range(self.max_frags):
            shinfo = wrap(address - self.frag_netmem - self.frags_offset - index * self.frag_size)
            try:
                raw = self.prog.read(shinfo, self.frags_offset + self.max_frags * self.frag_size)
            except drgn.FaultError:
                continue
            f = self.shinfo_reader.decode(raw)
            if not index < f["nr_frags"] <= self.max_frags or not 0 < f["dataref"] < 1 << 20:
                continue
            netmems = [
                struct.unpack_from(
                    self.word, raw, self.frags_offset + i * self.frag_size + self.frag_netmem
                )[0]
                for i in range(f["nr_frags"])
            ]
            if netmems[index] == value and all(netmems):
                return shinfo, index
        return None

    def _skbs_of_shinfos(
        self, shinfos: Set[int], slabs: Optional[SkbSlabs] = None
    ) -> Dict[int, Tuple[int, Dict[str, int]]]:
        """
        The skb (address, fields) of each skb_shared_info (of clones, the one
        :meth:`_live_clone` picks): from the skb slabs if given, and by
        searching RAM for ``skb->head`` for the rest unless the slabs were all
        read.
        """
        found: Dict[int, Tuple[int, Dict[str, int]]] = {}
        if slabs is not None:
            for shinfo, owner in self._shinfo_owners(slabs).items():
                if shinfo in shinfos:
                    found[shinfo] = owner
            if slabs.complete:
                return found
        head_offset = self.skb_reader.offset("head")
        spans = [(s - MAX_SKB_END, s) for s in shinfos if s not in found]
        if not spans:
            return found
        sharers: Dict[int, List[Tuple[int, Dict[str, int]]]] = {}
        for address, value in search_words(self.prog, set(), spans, self.problems, self.search):
            skb_address = address - head_offset
            skb = self._read_skb(skb_address)
            if skb is not None and skb["head"] == value and value + skb["end"] in shinfos:
                sharers.setdefault(value + skb["end"], []).append((skb_address, skb))
        for shinfo, skbs in sharers.items():
            found.setdefault(shinfo, self._live_clone(sorted(skbs, key=lambda s: s[0])))
        return found

    def _skb_at_field(
        self, address: int, target: NetmemTarget
    ) -> Optional[Tuple[int, Dict[str, int]]]:
        """The skb whose ``head`` or ``data`` is the word at ``address``, pointing into the page."""
        if target.span is None:  # a net_iov: no memory of its own to point into
            return None
        lo, hi = target.span
        for field in ("head", "data"):
            skb_address = address - self.skb_reader.offset(field)
            skb = self._read_skb(skb_address)
            if skb is not None and lo <= skb[field] < hi:
                return skb_address, skb
        return None

    # -- sockets -------------------------------------------------------------

    def _sock_info(self, address: int) -> Optional[SockInfo]:
        try:
            raw = self.prog.read(wrap(address), self.sock_reader.size)
        except drgn.FaultError:
            return None
        f = self.sock_reader.decode(raw)
        family = FAMILIES.get(f["family"])
        if family is None:
            return None
        local = remote = None
        # __be16 and __be32 members, decoded as integers in the target's byte order
        order = self.byte_order
        port = int.from_bytes(f["dport"].to_bytes(2, order), "big")
        if family == "inet":
            local = f"{ipaddress.IPv4Address(f['saddr'].to_bytes(4, order))}:{f['num']}"
            if port:
                remote = f"{ipaddress.IPv4Address(f['daddr'].to_bytes(4, order))}:{port}"
        elif family == "inet6" and self.v6_offsets is not None:
            saddr, daddr = (ipaddress.IPv6Address(raw[at : at + 16]) for at in self.v6_offsets)
            local = f"[{saddr}]:{f['num']}"
            if port:
                remote = f"[{daddr}]:{port}"
        netns = None
        if f["net"]:
            try:
                netns = self.prog.read_u32(wrap(f["net"] + self.inum_offset))
            except drgn.FaultError:
                pass
        protocol = None
        if f["protocol"] is not None and family in ("inet", "inet6"):
            protocol = PROTOCOLS.get(f["protocol"], str(f["protocol"]))
        state = TCP_STATES.get(f["state"]) if protocol == "tcp" else None
        return SockInfo(address, family, local, remote, netns, protocol, state)

    def _queue_head_ring(self, skb_address: int) -> Tuple[List[int], bool]:
        """The nodes after an skb along ``next``, and whether they come back to it."""
        nodes: List[int] = []
        seen = {skb_address}
        node = skb_address
        for _ in range(MAX_QUEUE_STEPS):
            try:
                node = self.prog.read_word(wrap(node + self.skb_reader.offset("next")))
            except drgn.FaultError:
                return nodes, False
            if node == skb_address:
                return nodes, True
            if not node or node in seen:
                return nodes, False
            seen.add(node)
            nodes.append(node)
        return nodes, False

    def _owner(
        self, skb_address: int, skb: Dict[str, int]
    ) -> Tuple[Optional[SockInfo], Optional[str]]:
        """The socket and queue holding an skb."""
        try:
            return self._sockets[skb_address]
        except KeyError:
            pass
        result: Tuple[Optional[SockInfo], Optional[str]] = (None, None)
        nodes, ring = self._queue_head_ring(skb_address)
        if ring:
            result = self._ring_owner(nodes, skb["sk"]) or result
        elif skb["sk"]:
            sock = self._sock_info(skb["sk"])
            if sock is not None:
                queue = None
                if self._in_backlog(skb["sk"], skb_address):
                    queue = "backlog"
                elif self.tcp_ofo.holds(skb["sk"], skb_address):
                    queue = "tcp-ofo"
                result = (sock, queue)
        self._sockets[skb_address] = result
        return result

    def _ring_owner(self, nodes: List[int], sk: int) -> Optional[Tuple[SockInfo, str]]:
        # The queue head is the node whose qlen counts the others.
        for head in nodes:
            try:
                qlen = self.prog.read_u32(wrap(head + self.qlen_offset))
            except drgn.FaultError:
                continue
            if qlen != len(nodes):
                continue
            hypotheses = []
            for queue, offset in self.queue_offsets:
                sock = self._sock_info(head - offset)
                if sock is not None and (not sk or sk == sock.address):
                    hypotheses.append((sock, queue))
            if hypotheses:
                return hypotheses[0]
        return None

    def _in_backlog(self, sk: int, skb_address: int) -> bool:
        try:
            node = self.sock_reader.read(sk)["backlog"]
            for _ in range(MAX_QUEUE_STEPS):
                if not node:
                    return False
                if node == skb_address:
                    return True
                node = self.prog.read_word(wrap(node + self.skb_reader.offset("next")))
        except drgn.FaultError:
            pass
        return False

    def _netdev_name(self, dev: int) -> Optional[str]:
        """The name of the net_device at ``dev`` (an skb's ``dev``), if it is one."""
        info = self.netdevs.info(dev) if dev else None
        return info.name if info is not None and info.name.isprintable() else None

    def _skb_holder(
        self,
        kind: str,
        address: int,
        value: int,
        skb_address: int,
        skb: Dict[str, int],
        frag: Optional[int] = None,
    ) -> Holder:
        place = self.cpu_queues.of_skb(skb_address) or self.qdiscs.of_skb(skb_address)
        if place is not None:
            return Holder(
                kind,
                address,
                value,
                skb=skb_address,
                frag=frag,
                queue=place.queue,
                netdev=place.netdev or self._netdev_name(skb["dev"]),
                detail=place.detail,
            )
        sock, queue = self._owner(skb_address, skb)
        # In the out-of-order rbtree, skb->dev is part of skb->rbnode.
        netdev = self._netdev_name(skb["dev"]) if queue != "tcp-ofo" else None
        rx_slot = self.rx_rings.of_skb(skb_address) if sock is None else None
        if rx_slot is not None:
            queue, netdev = "rx-ring", rx_slot.netdev
        detail = None
        if sock is None and rx_slot is None:
            detail = self.gro.of_skb(skb_address)
            queue = "gro" if detail is not None else queue
        owners = release = None
        if sock is not None:
            owners = self.owners.of(sock.address)
            release = self._socket_release(sock, owners)
        return Holder(
            kind,
            address,
            value,
            skb=skb_address,
            frag=frag,
            sock=sock,
            queue=queue,
            netdev=netdev,
            rx_slot=rx_slot,
            owners=owners,
            release=release,
            detail=detail,
        )

    def _socket_release(self, sock: SockInfo, owners: Optional[Tuple[Owner, ...]]) -> Optional[str]:
        """What releases what the socket holds (:func:`release_action`), if anything can."""
        return release_action(
            sock.protocol,
            sock.local,
            sock.remote,
            sock.netns,
            owners,
            self.owners.any_pid_in(sock.netns) if sock.netns is not None else None,
            self.init_netns,
        )

    # -- devmem TCP tokens -----------------------------------------------------

    def tokens(self) -> DevmemTokens:
        """The tokens of the sockets processes have open, walked on first use."""
        if self._tokens is None:
            self._tokens = DevmemTokens(self.prog, self.problems, self.owners.sockets())
        return self._tokens

    def _token_holder(self, token: DevmemToken) -> Holder:
        sock = self._sock_info(token.sk)
        owners = self.owners.of(token.sk)
        socket_release = None
        if sock is not None:
            socket_release = (
                self._socket_release(sock, owners)
                or f"closing {sock.family} socket {sock.local or hex(sock.address)}"
            )
        return Holder(
            TOKEN_KINDS[0],
            token.slot,
            token.netmem,
            sock=sock,
            owners=owners,
            release=token_release(owners, socket_release),
            token=token.token,
            detail=f"devmem token {token.token} of socket {token.sk:#x}",
        )

    def token_holders(self, targets: Sequence[NetmemTarget]) -> Dict[int, List[Holder]]:
        """
        The devmem TCP tokens that hold each net_iov target, read from the
        sockets' ``sk_user_frags`` without searching RAM (the sockets are
        only walked when there is a net_iov among the targets).
        """
        result: Dict[int, List[Holder]] = {t.netmem: [] for t in targets}
        if not any(t.kind == "net_iov" for t in targets):
            return result
        tokens = self.tokens()
        for target in targets:
            if target.kind == "net_iov":
                for token in tokens.by_netmem.get(target.netmem, ()):
                    result[target.netmem].append(self._token_holder(token))
        return result

    # -- without searching RAM -------------------------------------------------

    def _valid_skbs(self, slabs: SkbSlabs) -> List[Tuple[int, Dict[str, int]]]:
        """The candidates of the slabs that are valid sk_buffs, with their fields."""
        if self._valid_cache is not None and self._valid_cache[0] is slabs:
            return self._valid_cache[1]
        valid = []
        for address in slabs.skbs:
            skb = self._read_skb(address)
            if skb is not None:
                valid.append((address, skb))
        self._valid_cache = (slabs, valid)
        return valid

    def _shinfo_owners(self, slabs: SkbSlabs) -> Dict[int, Tuple[int, Dict[str, int]]]:
        """
        The valid sk_buffs of the slabs by the address of their
        skb_shared_info (``head + end``); of the clones sharing one, the
        lowest the slab does not record as free.
        """
        sharers: Dict[int, List[Tuple[int, Dict[str, int]]]] = {}
        for address, skb in self._valid_skbs(slabs):
            sharers.setdefault(skb["head"] + skb["end"], []).append((address, skb))
        return {shinfo: self._live_clone(skbs) for shinfo, skbs in sharers.items()}

    def _live_clone(self, skbs: List[Tuple[int, Dict[str, int]]]) -> Tuple[int, Dict[str, int]]:
        """
        Of the valid sk_buffs sharing one skb_shared_info (by address), the
        lowest the slab does not record as free.  A freed clone still looks
        valid: skb_unref() frees a sole reference without dropping users to
        0, and the slab object keeps head and end.  The slab's own record
        says which clone the kernel still holds (seen on Debian 7.3.4: a
        freed clone below the one queued on the socket).
        """
        if len(skbs) > 1:
            skbs = [s for s in skbs if self._skb_is_free(s[0]) is not True] or skbs
        return skbs[0]

    def _skb_is_free(self, address: int) -> Optional[bool]:
        """Whether the sk_buff slab object at ``address`` is free; None if not known."""
        place = slab_place(self.prog, address, self._slab_objects)
        if place is None or place.allocated is None:
            return None
        return not place.allocated

    def _shinfo_netmems(self, shinfo: int) -> Optional[List[int]]:
        """The frag netmems of a valid skb_shared_info, else None."""
        try:
            raw = self.prog.read(wrap(shinfo), self.frags_offset + self.max_frags * self.frag_size)
        except drgn.FaultError:
            return None
        f = self.shinfo_reader.decode(raw)
        if not 0 < f["nr_frags"] <= self.max_frags or not 0 < f["dataref"] < 1 << 20:
            return None
        at = self.frags_offset + self.frag_netmem
        netmems = [
            struct.unpack_from(self.word, raw, at + i * self.frag_size)[0]
            for i in range(f["nr_frags"])
        ]
        return netmems if all(netmems) else None

    def skb_holders(
        self, targets: Sequence[NetmemTarget], slabs: SkbSlabs
    ) -> Dict[int, List[Holder]]:
        """
        The skb frags and heads that reference each target, among the
        sk_buffs of ``slabs``, classified as :meth:`find` classifies them,
        without searching RAM.
        """
        by_netmem = {t.netmem: t for t in targets}
        spans = sorted((t.span[0], t.span[1], t) for t in targets if t.span)
        starts = [span[0] for span in spans]
        result: Dict[int, List[Holder]] = {t.netmem: [] for t in targets}
        owners = self._shinfo_owners(slabs)
        seen_heads: Set[Tuple[int, int]] = set()
        for shinfo, (skb_address, skb) in sorted(owners.items(), key=lambda o: o[1][0]):
            netmems = self._shinfo_netmems(shinfo)
            for index, netmem in enumerate(netmems or ()):
                target = by_netmem.get(netmem)
                if target is not None:
                    address = shinfo + self.frags_offset + index * self.frag_size + self.frag_netmem
                    result[target.netmem].append(
                        self._skb_holder("skb-frag", address, netmem, skb_address, skb, frag=index)
                    )
        for skb_address, skb in self._valid_skbs(slabs):
            for field in ("head", "data"):
                value = skb[field]
                i = bisect.bisect_right(starts, value) - 1
                if i < 0 or value >= spans[i][1]:
                    continue
                target = spans[i][2]
                if (target.netmem, skb_address) not in seen_heads:
                    seen_heads.add((target.netmem, skb_address))
                    address = skb_address + self.skb_reader.offset(field)
                    result[target.netmem].append(
                        self._skb_holder("skb-head", address, value, skb_address, skb)
                    )
        for holders in result.values():
            holders.sort(key=lambda h: h.address)
        return result

    def pool_holders(self, targets: Sequence[NetmemTarget]) -> Dict[int, List[Holder]]:
        """
        The slots of the pools' own alloc caches, rings and fragment pages
        that name each target, read directly, without searching RAM.
        """
        by_word = {word: t for t in targets for word in t.words}
        result: Dict[int, List[Holder]] = {t.netmem: [] for t in targets}
        places = [(start, end) for start, end, _, _, _ in self._pool_index]
        if self.frag_page_offset is not None:
            places += [
                (
                    info.address + self.frag_page_offset,
                    info.address + self.frag_page_offset + self.word_size,
                )
                for info in self.pools.values()
            ]
        for start, end in places:
            try:
                raw = self.prog.read(wrap(start), end - start)
            except drgn.FaultError as e:
                self.problems.fault("page pool", start, e)
                continue
            for j, (value,) in enumerate(struct.iter_unpack(self.word, raw)):
                target = by_word.get(value)
                if target is not None:
                    holder = self._pool_holder(start + self.word_size * j, value)
                    if holder is not None:
                        result[target.netmem].append(holder)
        return result

    # -- the search ----------------------------------------------------------

    def find(
        self, targets: Sequence[NetmemTarget], slabs: Optional[SkbSlabs] = None
    ) -> Dict[int, List[Holder]]:
        """
        Every reference to each target, by the target's netmem, found by
        searching RAM; the sk_buffs of skb frags found come from ``slabs``
        (see :func:`~netmem_probe.kernel.skbs.find_skb_slabs`) when given, and
        from a second search of RAM otherwise or for what they could not read.
        """
        by_word: Dict[int, NetmemTarget] = {}
        for target in targets:
            for word in target.words:
                by_word[word] = target
        spans = sorted((t.span[0], t.span[1], t) for t in targets if t.span)
        span_starts = [s[0] for s in spans]
        result: Dict[int, List[Holder]] = {t.netmem: [] for t in targets}
        frag_hits: List[Tuple[NetmemTarget, int, int, int, int]] = []
        seen_heads: Set[Tuple[int, int]] = set()
        hits: Dict[int, int] = dict.fromkeys(result, 0)
        for address, value in search_words(
            self.prog, set(by_word), [(lo, hi) for lo, hi, _ in spans], self.problems, self.search
        ):
            named = by_word.get(value)
            if named is not None:
                target = named
            else:
                target = spans[bisect.bisect_right(span_starts, value) - 1][2]
            hits[target.netmem] += 1
            if hits[target.netmem] > MAX_REFERENCES:
                if hits[target.netmem] == MAX_REFERENCES + 1:
                    self.problems.add(
                        "holders search",
                        target.address,
                        f"more than {MAX_REFERENCES} references: stopped classifying them",
                    )
                if all(n > MAX_REFERENCES for n in hits.values()):
                    break
                continue
            if value not in by_word:
                found_skb = self._skb_at_field(address, target)
                if found_skb is None:
                    result[target.netmem].append(self._unknown(address, value))
                elif (target.netmem, found_skb[0]) not in seen_heads:
                    seen_heads.add((target.netmem, found_skb[0]))
                    result[target.netmem].append(
                        self._skb_holder("skb-head", address, value, *found_skb)
                    )
                continue
            holder = self._pool_holder(address, value) or self._dma_mapped_holder(
                target, address, value
            )
            if holder is not None:
                result[target.netmem].append(holder)
                continue
            if value == target.netmem:
                frag = self._shinfo_frag(address, value)
                if frag is not None:
                    frag_hits.append((target, address, value, frag[0], frag[1]))
                    continue
                token = self.tokens().at(address) if target.kind == "net_iov" else None
                if token is not None:
                    result[target.netmem].append(self._token_holder(token))
                    continue
            if target.owner is not None and self._in_area(target, address):
                result[target.netmem].append(
                    Holder("net-iov-area", address, value, detail=f"area {target.owner:#x}")
                )
                continue
            result[target.netmem].append(self._unknown(address, value))
        if frag_hits:
            skbs = self._skbs_of_shinfos({hit[3] for hit in frag_hits}, slabs)
            for target, address, value, shinfo, index in frag_hits:
                found_skb = skbs.get(shinfo)
                if found_skb is None:
                    result[target.netmem].append(
                        Holder(
                            "skb-frag",
                            address,
                            value,
                            frag=index,
                            detail=f"skb_shared_info at {shinfo:#x}; no sk_buff points at it",
                        )
                    )
                else:
                    result[target.netmem].append(
                        self._skb_holder("skb-frag", address, value, *found_skb, frag=index)
                    )
        self._add_referrers(result, slabs)
        for holders in result.values():
            holders.sort(key=lambda h: h.address)
        return result

    def _add_referrers(
        self, result: Dict[int, List[Holder]], slabs: Optional[SkbSlabs] = None
    ) -> None:
        """
        One step back from each unknown reference in an allocated slab
        object: the places of the words pointing at the object's start (one
        more search of memory, for all of them at once).  With ``slabs`` that
        list the slab pages, only those are searched (the objects pointing
        at it), a small part of RAM; otherwise all of RAM.
        """
        objects = {
            h.slab.object
            for holders in result.values()
            for h in holders
            if h.kind == "unknown" and h.slab is not None and h.slab.allocated
        }
        if not objects:
            return
        ranges = slabs.slab_ranges if slabs is not None else None
        hits = search_words(self.prog, objects, (), self.problems, self.search, ranges)
        found = referrers(self.prog, objects, hits, self._slab_objects)
        for holders in result.values():
            for i, h in enumerate(holders):
                if h.kind == "unknown" and h.slab is not None and h.slab.object in found:
                    places = tuple(found[h.slab.object])
                    holders[i] = dataclasses.replace(
                        h,
                        pointed_from=places,
                        detail=f"{h.detail}; {describe(places, ranges is not None)}",
                    )

    def _in_area(self, target: NetmemTarget, address: int) -> bool:
        """Whether ``address`` is the owner area's ``niovs`` member."""
        area_type = "struct net_iov_area"
        try:
            self.prog.type(area_type)
        except LookupError:
            area_type = "struct dmabuf_genpool_chunk_owner"
        return address == target.owner + drgn.offsetof(self.prog.type(area_type), "niovs")

    def _unknown(self, address: int, value: int) -> Holder:
        """
        A reference in a driver's rx ring, else in a slab object (cache, object,
        member), else in the kernel's or a module's static data (symbol), else
        one described by ``identify_address()``.
        """
        rx_slot = self.rx_rings.at(address)
        if rx_slot is not None:
            return Holder(
                "rx-ring",
                address,
                value,
                netdev=rx_slot.netdev,
                detail=str(rx_slot),
                rx_slot=rx_slot,
            )
        place = slab_place(self.prog, address, self._slab_objects)
        if place is not None:
            return Holder("unknown", address, value, detail=f"slab {place}", slab=place)
        static = self.statics.at(address)
        if static is not None:
            return Holder(
                STATIC_KIND,
                address,
                value,
                detail=f"{static} ({static.owner}'s {static.region} at {static.address:#x})",
                static=static,
                release=static.release,
            )
        from drgn.helpers.common.memory import identify_address

        try:
            detail = identify_address(self.prog, address, cache=self._identify_cache)
        except Exception:  # noqa: BLE001 - it walks slab metadata that may be corrupt
            detail = None
        return Holder("unknown", address, value, detail=detail or page_place(self.prog, address))

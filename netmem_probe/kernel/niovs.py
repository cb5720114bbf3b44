"""
net_iovs
--------

What each ``struct net_iov`` of a provider area is doing: free, in a page
pool's alloc cache or ptr_ring, held by the stack (driver rings, skbs), or
held by user space (zcrx ``user_refs``).  An area's niov array is read in one
go and decoded at C speed; a niov that does not fit its area is reported.
"""

import struct
import sys
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from typing import (
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import drgn
from drgn import Object, Program

from netmem_probe.kernel.actors import SocketOwners
from netmem_probe.kernel.areas import NiovSpan, ProviderArea, net_iov_size
from netmem_probe.kernel.cache import per_program
from netmem_probe.kernel.devmem import DevmemTokens
from netmem_probe.kernel.netmem import NET_IOV, niov_reader
from netmem_probe.kernel.page_pool import (
    PagePoolInfo,
    pool_held_netmems,
    pool_provider,
    provider_ops_address,
)
from netmem_probe.kernel.platform import platform_facts, word_format
from netmem_probe.kernel.structs import member_exists
from netmem_probe.kernel.walk import Problems

__all__ = (
    "NIOV_STATES",
    "NiovInfo",
    "NiovProviderDetails",
    "NiovStates",
    "infer_niov_kind",
    "niov_provider_details",
)

#: What a niov can be doing: back with its provider; in a page pool's alloc
#: cache or ptr_ring; out with the driver or the stack (rx rings, skbs,
#: socket queues); or handed to user space (zcrx, until it is returned
#: through the refill queue; devmem TCP, under a token in an open socket's
#: ``sk_user_frags`` until SO_DEVMEM_DONTNEED).
NIOV_STATES = ("free", "cache", "ring", "stack", "user")


# The set bits of a bitmap: int.bit_count() is Python 3.10+, and 3.9 is the floor.
if sys.version_info >= (3, 10):
    _popcount = int.bit_count
else:

    def _popcount(value: int) -> int:
        return bin(value).count("1")


def infer_niov_kind(prog: Program, pool: int) -> Optional[str]:
    """The provider of a niov on kernels whose net_iov has no ``type``."""
    if provider_ops_address(prog, "io_uring_pp_zc_ops") is None:
        return "dmabuf"  # devmem is the only provider this kernel has
    if not pool:
        return None
    pool_obj = Object(prog, "struct page_pool *", pool)
    try:
        return pool_provider(prog, pool_obj.mp_ops.value_(), pool_obj.mp_priv.value_())
    except drgn.FaultError:
        return None


@dataclass(frozen=True)
class NiovProviderDetails:
    user_refs: Optional[int] = None
    area_id: Optional[int] = None
    binding_id: Optional[int] = None


def niov_provider_details(
    prog: Program, owner: int, index: int, kind: Optional[str]
) -> NiovProviderDetails:
    """Provider-specific facts about niov ``index`` of the area at ``owner``."""
    try:
        if kind == "io_uring":
            area = Object(
                prog,
                "struct io_zcrx_area *",
                owner - drgn.offsetof(prog.type("struct io_zcrx_area"), "nia"),
            )
            return NiovProviderDetails(
                user_refs=area.user_refs[index].counter.value_(), area_id=area.area_id.value_()
            )
        if kind == "dmabuf":
            chunk_type = prog.type("struct dmabuf_genpool_chunk_owner")
            base = (
                owner - drgn.offsetof(chunk_type, "area")
                if member_exists(chunk_type, "area")
                else owner
            )
            chunk = Object(prog, "struct dmabuf_genpool_chunk_owner *", base)
            return NiovProviderDetails(binding_id=chunk.binding.id.value_())
    except (drgn.FaultError, LookupError):
        pass
    return NiovProviderDetails()


class NiovInfo(NamedTuple):
    """One niov of an area and what it is doing (an immutable record)."""

    area: ProviderArea
    span: NiovSpan
    # Its index in the area; hides tuple.index(), which nothing calls on a niov.
    index: int  # type: ignore[assignment]
    address: int
    state: str  # one of NIOV_STATES
    pool: int  # niov->pp
    pool_id: Optional[int]
    pp_ref_count: int
    user_refs: Optional[int]
    dma_addr: int
    #: Offset in the dma-buf (devmem) or in the zcrx area as user space sees
    #: it (RQE/CQE offsets, without the area id bits).
    offset: int

    @property
    def netmem(self) -> int:
        return self.address | 1


# struct format codes of the integer members a niov is sliced into
IntCode = Literal["b", "B", "h", "H", "i", "I", "q", "Q"]
INT_CODES: Dict[Tuple[int, bool], IntCode] = {
    (1, True): "b",
    (1, False): "B",
    (2, True): "h",
    (2, False): "H",
    (4, True): "i",
    (4, False): "I",
    (8, True): "q",
    (8, False): "Q",
}


class _NiovLayout(NamedTuple):
    unpacker: struct.Struct
    #: itemgetter of (pp, pp_ref_count, dma_addr, owner[, type]) from an unpacked niov
    members: Callable[[Tuple[int, ...]], Tuple[int, ...]]
    #: member -> (offset, struct format code), for column slices of an array
    fields: Dict[str, Tuple[int, "IntCode"]]


@per_program
def _niov_layout(prog: Program) -> _NiovLayout:
    """
    One ``struct.Struct`` the size of a ``struct net_iov`` for the members
    :func:`niov_reader` decodes, so a whole niov array decodes with
    ``iter_unpack()`` at C speed.  ``type`` is left out on kernels without
    it (before v6.16).
    """
    reader = niov_reader(prog)
    present = {
        k: field
        for k in ("pp", "pp_ref_count", "dma_addr", "owner", "type")
        if (field := reader.fields[k]) is not None
    }
    keys = list(present)
    fmt, end = platform_facts(prog).endian, 0
    order: List[str] = []
    fields: Dict[str, Tuple[int, IntCode]] = {}
    for key, field in sorted(present.items(), key=lambda kv: kv[1].offset):
        code = INT_CODES[field.size, field.signed]
        fmt += f"{field.offset - end}x{code}"
        end = field.offset + field.size
        order.append(key)
        fields[key] = (field.offset, code)
    fmt += f"{reader.size - end}x"
    layout = _NiovLayout(struct.Struct(fmt), itemgetter(*(order.index(k) for k in keys)), fields)
    return layout


class _SpanState(NamedTuple):
    raw: bytes  # the niov array
    free: bytes  # bitmap of free niovs
    user: bytes  # bitmap of niovs with user refs
    user_refs: Optional[Tuple[int, ...]]
    pool: Dict[int, Tuple[int, str]]  # index -> (pool address, "cache" or "ring")
    bad: Dict[int, str]  # index -> why the niov does not fit its area


def _columns(raw: bytes, niov_size: int, layout: _NiovLayout) -> Dict[str, List[int]]:
    """
    Members of every niov of an array, a list per member, sliced at C speed
    (a strided memoryview, when the host's byte order is the target's).
    """
    out = {}
    endian = layout.unpacker.format[0]
    if endian != ("<" if sys.byteorder == "little" else ">"):
        for key, (offset, code) in layout.fields.items():
            width = struct.calcsize(code)
            column = struct.Struct(f"{endian}{offset}x{code}{niov_size - offset - width}x")
            out[key] = [value for (value,) in column.iter_unpack(raw)]
        return out
    for key, (offset, code) in layout.fields.items():
        width = struct.calcsize(code)
        view = memoryview(raw).cast(code)
        out[key] = view[offset // width :: niov_size // width].tolist()
    return out


class NiovStates:
    """
    What every niov of a set of areas is doing.  Unreadable or inconsistent
    niovs are recorded in :attr:`problems` (once each) and skipped; the
    number skipped per area is in :attr:`inconsistent`.

    :param areas: every area the Program reaches (a niov in a pool's cache
        or ring is looked for in the areas of the pool's provider).
    :param pools: every page pool.
    """

    def __init__(
        self,
        prog: Program,
        problems: Problems,
        areas: Sequence[ProviderArea],
        pools: Sequence[PagePoolInfo],
    ) -> None:
        self.prog = prog
        self.problems = problems
        self.areas = areas
        self.pools = pools
        self.niov_size = net_iov_size(prog)
        self.niov_types = {
            _constant(prog, "NET_IOV_DMABUF"): "dmabuf",
            _constant(prog, "NET_IOV_IOURING"): "io_uring",
        }
        self._locations: Optional[Dict[int, Tuple[int, str]]] = None
        self._token_niovs: Optional[Set[int]] = None
        self.inconsistent: Dict[int, int] = {}
        self._reported: Set[Tuple[int, str]] = set()

    def locations(self) -> Dict[int, Tuple[int, str]]:
        """
        netmem -> (pool address, ``"cache"`` or ``"ring"``) for every niov
        in the alloc cache or ptr_ring of a pool with a memory provider.  A
        niov there that lies outside every area of the pool's provider is
        reported as inconsistent.
        """
        if self._locations is not None:
            return self._locations
        spans: Dict[int, List[NiovSpan]] = {}
        for area in self.areas:
            for pool in area.pool_addresses:
                spans.setdefault(pool, []).extend(area.spans)
        out: Dict[int, Tuple[int, str]] = {}
        for info in self.pools:
            if info.provider is None:
                continue
            for netmem, where in pool_held_netmems(self.prog, info, self.problems).items():
                if not netmem & 1:
                    continue
                niov = netmem & ~1
                if not any(s.contains(niov, self.niov_size) for s in spans.get(info.address, ())):
                    self.problems.add(
                        "net_iov",
                        niov,
                        f"in pool {info.id}'s {where} but outside every area of its provider",
                    )
                    continue
                out[netmem] = (info.address, where)
        self._locations = out
        return out

    def token_niovs(self) -> Set[int]:
        """
        The addresses of the devmem niovs that a socket some process has open
        holds under a token (:class:`~netmem_probe.kernel.devmem.DevmemTokens`;
        the file tables are walked on first use).  Devmem keeps no per-niov
        user count, unlike zcrx's ``user_refs``: the tokens are where user
        space's hold is recorded.
        """
        if self._token_niovs is None:
            sockets = SocketOwners(self.prog, self.problems).sockets()
            tokens = DevmemTokens(self.prog, self.problems, sockets)
            self._token_niovs = {netmem & ~NET_IOV for netmem in tokens.by_netmem}
        return self._token_niovs

    def _span_state(self, area: ProviderArea, span: NiovSpan) -> Optional["_SpanState"]:
        """
        Read a niov array, its free bitmap or freelist and its user refs in
        one read each, and work out which niovs are free, in a pool or held
        by user space, and which do not fit their area (reported once).
        None (reported) if the span cannot be read.
        """
        prog = self.prog
        count = span.count
        try:
            raw = prog.read(span.niovs, count * self.niov_size)
            if span.bitmap is not None:
                # The genpool marks allocated niovs in unsigned longs (bit i
                # of word i // 64); free ones are its zeros.  Here bit i is
                # bit i % 8 of byte i // 8.
                nwords = -(-count // 64)
                words = struct.unpack(word_format(prog, nwords), prog.read(span.bitmap, 8 * nwords))
                allocated = sum(word << (64 * i) for i, word in enumerate(words))
                free = (~allocated & ((1 << 64 * nwords) - 1)).to_bytes(8 * nwords, "little")
            else:
                free = self._freelist_bits(span)
            user = bytearray(-(-count // 8))
            user_refs = None
            if span.user_refs:
                endian = platform_facts(prog).endian
                user_refs = struct.unpack(f"{endian}{count}i", prog.read(span.user_refs, 4 * count))
                for i in compress(range(count), user_refs):
                    user[i >> 3] |= 1 << (i & 7)
            elif area.kind == "dmabuf":
                for niov in self.token_niovs():
                    if span.contains(niov, self.niov_size):
                        i = (niov - span.niovs) // self.niov_size
                        user[i >> 3] |= 1 << (i & 7)
        except drgn.FaultError as e:
            self.problems.fault(f"{area.kind} niovs of {area.key}", span.niovs, e)
            return None
        bad: Dict[int, str] = {}
        for i, reason in self._misfits(area, span, raw):
            bad[i] = reason
        pool: Dict[int, Tuple[int, str]] = {}
        for netmem, where in self.locations().items():
            if span.contains(netmem & ~1, self.niov_size):
                i = ((netmem & ~1) - span.niovs) // self.niov_size
                if free[i >> 3] >> (i & 7) & 1 and i not in bad:
                    pool_id = self._pool_ids().get(where[0])
                    bad[i] = f"free, yet in pool {pool_id}'s {where[1]}"
                pool[i] = where
        for i, reason in bad.items():
            address = span.niovs + i * self.niov_size
            if (address, reason) not in self._reported:
                self._reported.add((address, reason))
                self.problems.add("net_iov", address, reason)
        return _SpanState(raw, free, bytes(user), user_refs, pool, bad)

    def _misfits(self, area: ProviderArea, span: NiovSpan, raw: bytes) -> Iterator[Tuple[int, str]]:
        """Indexes of niovs whose owner or type is not their area's, with why."""
        layout = _niov_layout(self.prog)
        columns = _columns(raw, self.niov_size, layout)
        owners = columns["owner"]
        if owners.count(span.owner) != span.count:
            for i, owner in enumerate(owners):
                if owner != span.owner:
                    yield i, f"owner is {owner:#x}, not its area {span.owner:#x}"
        kinds = columns.get("type")
        want = next((k for k, v in self.niov_types.items() if v == area.kind), None)
        if kinds is not None and want is not None and kinds.count(want) != span.count:
            for i, kind in enumerate(kinds):
                if kind != want and owners[i] == span.owner:
                    yield i, f"type {kind} is not {area.kind}'s"

    def _freelist_bits(self, span: NiovSpan) -> bytes:
        """The zcrx freelist (niov indexes) as a bitmap of free niovs."""
        free = bytearray(-(-span.count // 8))
        if not span.free_count or span.freelist is None:
            return bytes(free)
        endian = platform_facts(self.prog).endian
        entries = struct.unpack(
            f"{endian}{span.free_count}I", self.prog.read(span.freelist, 4 * span.free_count)
        )
        seen = 0
        for e in entries:
            if e < span.count and not free[e >> 3] >> (e & 7) & 1:
                free[e >> 3] |= 1 << (e & 7)
                seen += 1
        if seen != len(entries):
            self.problems.add(
                "io_zcrx_area freelist", span.freelist, "holds indexes out of range or twice"
            )
        return bytes(free)

    def _pool_ids(self) -> Dict[int, int]:
        # providers came after pool ids (v6.8): every provider pool has one
        return {p.address: p.id for p in self.pools if p.id is not None}

    def niovs(self, area: ProviderArea) -> Iterator[NiovInfo]:
        """
        Every consistent niov of ``area``, each niov array (and its bitmap,
        user refs and freelist) read in one go and decoded with one
        ``struct.iter_unpack()``.  A niov whose ``owner`` or ``type`` does
        not fit its area, or that is free and in a pool at once, is reported
        and skipped (counted in :attr:`inconsistent`).
        """
        pool_ids = self._pool_ids()
        layout = _niov_layout(self.prog)
        size = self.niov_size
        shift = area.niov_shift
        self.inconsistent[area.address] = 0
        for span in area.spans:
            state = self._span_state(area, span)
            if state is None:
                self.inconsistent[area.address] += span.count
                continue
            self.inconsistent[area.address] += len(state.bad)
            free, user, refs, pool, bad = (
                state.free,
                state.user,
                state.user_refs,
                state.pool,
                state.bad,
            )
            for i, values in enumerate(layout.unpacker.iter_unpack(state.raw)):
                if i in bad:
                    continue
                pp, pp_ref_count, dma_addr = layout.members(values)[:3]
                where = pool.get(i)
                if where is not None:
                    kind = where[1]
                elif free[i >> 3] >> (i & 7) & 1:
                    kind = "free"
                elif user[i >> 3] >> (i & 7) & 1:
                    kind = "user"
                else:
                    kind = "stack"
                yield NiovInfo(
                    area,
                    span,
                    i,
                    span.niovs + i * size,
                    kind,
                    pp,
                    pool_ids.get(pp) if pp else None,
                    pp_ref_count,
                    refs[i] if refs is not None else None,
                    dma_addr,
                    span.base_virtual + (i << shift),
                )

    def totals(self, area: ProviderArea) -> Dict[str, int]:
        """
        niovs per state (free, in-pool = cache + ring, stack, user) and the
        inconsistent ones, counted on bitmaps without a record per niov.
        """
        counts = dict.fromkeys(("free", "in-pool", "stack", "user", "inconsistent"), 0)
        for span in area.spans:
            state = self._span_state(area, span)
            if state is None:
                counts["inconsistent"] += span.count
                continue
            every = (1 << span.count) - 1
            bad = sum(1 << i for i in state.bad)
            pool = sum(1 << i for i in state.pool) & ~bad
            good = every & ~bad
            free = int.from_bytes(state.free, "little") & good & ~pool
            user = int.from_bytes(state.user, "little") & good & ~pool & ~free
            counts["in-pool"] += _popcount(pool)
            counts["free"] += _popcount(free)
            counts["user"] += _popcount(user)
            counts["stack"] += _popcount(good) - _popcount(pool | free | user)
            counts["inconsistent"] += len(state.bad)
        self.inconsistent[area.address] = counts["inconsistent"]
        return counts


def _constant(prog: Program, name: str) -> Optional[int]:
    try:
        return prog.constant(name).value_()
    except LookupError:
        return None

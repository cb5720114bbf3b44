"""
Memory providers
----------------

Page pools can be filled by a memory provider instead of the page allocator:
devmem TCP (dma-buf bindings, Linux 6.12+) and io_uring zero-copy receive
(zcrx, Linux 6.15+).  Both hand out ``struct net_iov``s that live in arrays
owned by an *area*: a ``struct dmabuf_genpool_chunk_owner`` (6.12-6.14), or a
``struct net_iov_area`` embedded in the chunk owner or in a
``struct io_zcrx_area`` (6.15+).

These helpers find every provider the kernel can reach (the static
``net_devmem_dmabuf_bindings`` XArray, the pools whose ``mp_priv`` names a
provider, the rx queues' ``mp_params``, io_uring rings' ``zcrx_ctxs``), read
each area's niov array in one go, and tell what each niov is doing: free, in
a pool's alloc cache or ring, held by the stack (driver rings, skbs), or held
by user space (zcrx ``user_refs``).
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

from netmem_probe.kernel.cache import per_program
from netmem_probe.kernel.netdev import NetdevInfo, NetdevReader, for_each_net_address
from netmem_probe.kernel.netmem import niov_reader
from netmem_probe.kernel.page_pool import (
    PagePoolInfo,
    PagePoolScanner,
    pool_held_netmems,
    pool_provider,
    provider_ops_address,
)
from netmem_probe.kernel.platform import platform_facts, word_format
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import Problems, list_nodes, read_words, wrap, xa_entries

__all__ = (
    "NIOV_STATES",
    "Area",
    "NiovInfo",
    "NiovProviderDetails",
    "NiovSpan",
    "ProviderArea",
    "ProviderScanner",
    "dmabuf_bindings_xarray",
    "infer_niov_kind",
    "io_uring_files",
    "niov_provider_details",
    "read_area",
    "ring_zcrx_ifqs",
)

#: What a niov can be doing: back with its provider; in a page pool's alloc
#: cache or ptr_ring; out with the driver or the stack (rx rings, skbs,
#: socket queues); or handed to user space (zcrx, until it is returned
#: through the refill queue).
NIOV_STATES = ("free", "cache", "ring", "stack", "user")

# Sanity limits: larger values are corrupt memory, not kernels.
MAX_NIOVS = 1 << 24
MAX_AREAS = 1 << 16
MAX_RX_QUEUES = 1 << 14

DMA_TO_DEVICE = 1


# The set bits of a bitmap: int.bit_count() is Python 3.10+, and 3.9 is the floor.
if sys.version_info >= (3, 10):
    _popcount = int.bit_count
else:

    def _popcount(value: int) -> int:
        return bin(value).count("1")


@dataclass(frozen=True)
class Area:
    """The niov array an area owns."""

    address: int
    niovs: int
    num_niovs: int
    base_virtual: int


def read_area(prog: Program, owner: int) -> Area:
    """
    Read the area a ``net_iov->owner`` points to.

    Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov chunk
    owners") (in v6.15) the owner is a ``struct net_iov_area *``; before, a
    ``struct dmabuf_genpool_chunk_owner *`` with the same three members.
    """
    try:
        type_name = "struct net_iov_area"
        prog.type(type_name)
    except LookupError:
        type_name = "struct dmabuf_genpool_chunk_owner"
    area = Object(prog, type_name, address=owner).read_()
    return Area(owner, area.niovs.value_(), area.num_niovs.value_(), area.base_virtual.value_())


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


def dmabuf_bindings_xarray(prog: Program) -> Optional[int]:
    """Address of the ``net_devmem_dmabuf_bindings`` XArray, or None without devmem."""
    for kwargs in ({"filename": "devmem.c"}, {}):
        try:
            return prog.object("net_devmem_dmabuf_bindings", **kwargs).address_
        except (LookupError, ValueError):
            continue
    return None


def ring_zcrx_ifqs(prog: Program, ctx: int, problems: Optional[Problems] = None) -> List[int]:
    """
    The zcrx ifqs an io_uring ring has registered.

    :param ctx: ``struct io_ring_ctx *``.
    :return: ``struct io_zcrx_ifq *`` addresses: the ``ctx->zcrx_ctxs`` XArray
        (Linux 6.17+, where an ifq can be shared by several rings), or the
        single ``ctx->ifq`` of Linux 6.15-6.16.
    :raises ValueError: if the kernel's rings have no zcrx ifqs.
    """
    ctx_type = prog.type("struct io_ring_ctx")
    if member_exists(ctx_type, "zcrx_ctxs"):
        xa = ctx + drgn.offsetof(ctx_type, "zcrx_ctxs")
        return [
            entry
            for _, entry in xa_entries(prog, xa, what="io_ring_ctx zcrx_ctxs", problems=problems)
        ]
    if member_exists(ctx_type, "ifq"):
        ifq = prog.read_word(wrap(ctx + drgn.offsetof(ctx_type, "ifq")))
        return [ifq] if ifq else []
    raise ValueError("this kernel's io_uring rings have no zcrx interface queues")


def io_uring_files(
    prog: Program, problems: Optional[Problems] = None
) -> Tuple[List[int], List[int]]:
    """
    Rings and exported zcrx ifqs reachable from the files tasks have open.

    A device-less zcrx ifq (``ZCRX_REG_NODEV``, Linux 7.1+) has no page pool
    and no rx queue; only the io_uring rings that registered it
    (``file->f_op == &io_uring_fops``, ``private_data`` a
    ``struct io_ring_ctx *``, then ``ctx->zcrx_ctxs``) or a ``"[zcrx]"`` file
    made by the export control op (``f_op == &zcrx_box_fops``,
    ``private_data`` the ifq) lead to it.

    :return: (``struct io_ring_ctx *`` addresses, ``struct io_zcrx_ifq *``
        addresses); both empty when the target has no task types (fixtures)
        or no io_uring.
    """
    fops = provider_ops_address(prog, "io_uring_fops")
    box = provider_ops_address(prog, "zcrx_box_fops")
    try:
        prog.type("struct task_struct")
        prog.type("struct files_struct")
    except LookupError:
        return [], []
    if fops is None and box is None:
        return [], []
    from drgn.helpers.linux.fs import for_each_file
    from drgn.helpers.linux.pid import for_each_task

    rings: List[int] = []
    ifqs: List[int] = []
    tables: Set[int] = set()
    for task in for_each_task(prog):
        try:
            table = task.files.value_()
            if not table or table in tables:  # threads share their file table
                continue
            tables.add(table)
            for _, file in for_each_file(task):
                f_op = file.f_op.value_()
                if f_op == fops:
                    rings.append(file.private_data.value_())
                elif f_op == box:
                    ifqs.append(file.private_data.value_())
        except drgn.FaultError as e:
            if problems is not None:
                problems.fault("task file table", task.value_(), e)
    return list(dict.fromkeys(rings)), list(dict.fromkeys(ifqs))


@dataclass(frozen=True)
class NiovSpan:
    """One niov array of a provider: a devmem genpool chunk or a zcrx area."""

    #: What the niovs' ``owner`` points to: the ``struct net_iov_area``
    #: (6.15+), or the ``struct dmabuf_genpool_chunk_owner`` (6.12-6.14).
    owner: int
    niovs: int
    count: int
    base_virtual: int
    #: Index of the chunk in dma-buf order (devmem), None for a zcrx area.
    chunk: Optional[int]
    #: ``gen_pool_chunk->bits`` (devmem): bit i set = niov i allocated.
    bitmap: Optional[int] = None
    #: ``io_zcrx_area->user_refs`` (``atomic_t[count]``), zcrx only.
    user_refs: Optional[int] = None
    #: ``io_zcrx_area->freelist`` (``u32[]`` of free niov indices), zcrx only.
    freelist: Optional[int] = None
    free_count: int = 0

    def contains(self, niov: int, niov_size: int) -> bool:
        offset = niov - self.niovs
        return 0 <= offset < self.count * niov_size and offset % niov_size == 0


@dataclass(frozen=True)
class ProviderArea:
    """
    One row of ``netmem-probe providers``: a devmem dma-buf binding (all of
    its chunks) or one io_uring zcrx area.
    """

    kind: str  # "dmabuf" or "io_uring"
    #: The binding's id (netlink's ``dmabuf``), or the zcrx area's ``area_id``.
    id: int
    #: ``struct net_devmem_dmabuf_binding *`` or ``struct io_zcrx_area *``.
    address: int
    #: ``struct io_zcrx_ifq *`` (zcrx), else None.
    ifq: Optional[int]
    netdev: Optional[NetdevInfo]
    queues: Tuple[int, ...]
    pools: Tuple[int, ...]  # ids of the page pools it fills
    pool_addresses: Tuple[int, ...]
    #: The binding's ``refcount_t ref`` or the ifq's ``refs`` (7.x); None when
    #: there is none or it is a per-CPU ``percpu_ref`` (devmem, 7.2+).
    refcount: Optional[int]
    direction: str  # "rx" or "tx" (devmem TX bindings, 6.16+)
    niov_shift: int
    #: dma-buf size (devmem) or area memory size (zcrx ``mem.size``).
    size: Optional[int]
    spans: Tuple[NiovSpan, ...]

    @property
    def key(self) -> str:
        """What ``niovs --area`` accepts: ``dmabuf:ID`` or ``io_uring:ADDRESS``."""
        if self.kind == "dmabuf":
            return f"dmabuf:{self.id}"
        return f"io_uring:{self.address:#x}"

    @property
    def num_niovs(self) -> int:
        return sum(span.count for span in self.spans)


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


class ProviderScanner:
    """
    Finds every memory provider area a Program can reach and tells what each
    niov is doing.  Unreadable or inconsistent objects are recorded in
    :attr:`problems` and skipped; the rest is still returned.

    :param rings: ``struct io_ring_ctx`` addresses whose zcrx ifqs to add.
    :param scan_files: also look for io_uring rings in every task's open
        files (device-less zcrx ifqs are only reachable that way).
    """

    def __init__(
        self,
        prog: Program,
        problems: Optional[Problems] = None,
        rings: Sequence[int] = (),
        scan_files: bool = True,
    ) -> None:
        self.prog = prog
        self.problems = problems if problems is not None else Problems()
        self.rings = tuple(rings)
        self.scan_files = scan_files
        self.pool_scanner = PagePoolScanner(prog, self.problems)
        self.page_size = platform_facts(prog).page_size
        self.page_shift = platform_facts(prog).page_shift
        try:
            self.niov_size = drgn.sizeof(prog.type("struct net_iov"))
        except LookupError:  # before Linux 6.12 (devmem TCP) there are no providers
            self.niov_size = 0
        self.netdevs = NetdevReader(prog, self.problems)
        self.niov_types = {
            _constant(prog, "NET_IOV_DMABUF"): "dmabuf",
            _constant(prog, "NET_IOV_IOURING"): "io_uring",
        }
        self._areas: Optional[List[ProviderArea]] = None
        self._pools: Optional[list] = None
        self._locations: Optional[Dict[int, Tuple[int, str]]] = None
        self.inconsistent: Dict[int, int] = {}
        self._reported: Set[Tuple[int, str]] = set()

    # -- discovery ---------------------------------------------------------

    def pools(self) -> List[PagePoolInfo]:
        """Every page pool (:class:`~netmem_probe.kernel.page_pool.PagePoolInfo`)."""
        if self._pools is None:
            self._pools = list(self.pool_scanner.pools())
        return self._pools

    def areas(self) -> List[ProviderArea]:
        """Every reachable provider area: bindings by id, then zcrx areas."""
        if self._areas is None and not self.niov_size:
            self._areas = []
        if self._areas is None:
            bindings: Dict[int, None] = {}
            ifqs: Dict[int, None] = {}
            xa = dmabuf_bindings_xarray(self.prog)
            if xa is not None:
                for _, entry in xa_entries(
                    self.prog, xa, what="net_devmem_dmabuf_bindings", problems=self.problems
                ):
                    bindings[entry] = None
            for info in self.pools():
                target = (
                    bindings
                    if info.provider == "dmabuf"
                    else (ifqs if info.provider == "io_uring" else None)
                )
                if target is not None and info.mp_priv:
                    target[info.mp_priv] = None
            for kind, mp_priv in self._rx_queue_providers():
                (bindings if kind == "dmabuf" else ifqs)[mp_priv] = None
            for ifq in self._ring_ifqs():
                ifqs[ifq] = None
            areas = [a for a in (self._binding(b) for b in bindings) if a is not None]
            areas.sort(key=lambda a: a.id)
            for ifq in ifqs:
                areas.extend(self._zcrx_areas(ifq))
            self._areas = areas
        return self._areas

    def _rx_queue_providers(self) -> Iterator[Tuple[str, int]]:
        """(kind, mp_priv) of every netdev rx queue with a memory provider."""
        prog = self.prog
        try:
            rxq_type = prog.type("struct netdev_rx_queue")
        except LookupError:
            return
        params = "mp_params."
        if not member_exists(rxq_type, "mp_params"):
            return
        reader = StructReader(
            prog,
            "struct netdev_rx_queue",
            {"mp_priv": params + "mp_priv", "mp_ops": params + "mp_ops"},
        )
        dev_reader = StructReader(
            prog, "struct net_device", {"rx": "_rx", "num_rx_queues": "num_rx_queues"}
        )
        dev_node = drgn.offsetof(prog.type("struct net_device"), "dev_list")
        dev_list = drgn.offsetof(prog.type("struct net"), "dev_base_head")
        size = reader.size
        for net in for_each_net_address(prog, self.problems):
            for node in list_nodes(
                prog, net + dev_list, what="dev_base_head", problems=self.problems
            ):
                dev = node - dev_node
                try:
                    d = dev_reader.read(dev)
                    count = d["num_rx_queues"]
                    if not d["rx"] or not 0 < count <= MAX_RX_QUEUES:
                        continue
                    raw = memoryview(prog.read(d["rx"], count * size))
                except drgn.FaultError as e:
                    self.problems.fault("net_device rx queues", dev, e)
                    continue
                for i in range(count):
                    q = reader.decode(raw[i * size : (i + 1) * size])
                    kind = pool_provider(prog, q["mp_ops"], q["mp_priv"])
                    if kind in ("dmabuf", "io_uring") and q["mp_priv"]:
                        yield kind, q["mp_priv"]

    def _ring_ifqs(self) -> List[int]:
        rings = list(self.rings)
        ifqs: List[int] = []
        if self.scan_files:
            found_rings, ifqs = io_uring_files(self.prog, self.problems)
            rings += found_rings
        for ctx in dict.fromkeys(rings):
            try:
                ifqs.extend(ring_zcrx_ifqs(self.prog, ctx, self.problems))
            except drgn.FaultError as e:
                self.problems.fault("io_ring_ctx", ctx, e)
        return [ifq for ifq in ifqs if ifq]

    def _pools_of(self, mp_priv: int, kind: str) -> List[PagePoolInfo]:
        return [p for p in self.pools() if p.provider == kind and p.mp_priv == mp_priv]

    def _netdev(self, address: int) -> Optional[NetdevInfo]:
        return self.netdevs.info(address) if address else None

    # -- devmem ------------------------------------------------------------

    def _binding(self, address: int) -> Optional[ProviderArea]:
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
        pools = self._pools_of(address, "dmabuf")
        return ProviderArea(
            kind="dmabuf",
            id=b["id"],
            address=address,
            ifq=None,
            netdev=self._netdev(b["dev"]),
            queues=self._bound_queues(address),
            pools=tuple(sorted(p.id for p in pools if p.id is not None)),
            pool_addresses=tuple(p.address for p in pools),
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

    # -- io_uring zcrx -----------------------------------------------------

    def _zcrx_areas(self, ifq: int) -> List[ProviderArea]:
        prog = self.prog
        reader = StructReader(
            prog,
            "struct io_zcrx_ifq",
            {
                # One area until Linux 7.3 made ifq->areas[nr_areas].
                "area": "area",
                "areas": "areas",
                "nr_areas": "nr_areas",
                # Since Linux 6.17 (rx_buf_len).
                "niov_shift": "niov_shift",
                "if_rxq": "if_rxq",
                "netdev": "netdev",
                # Since ifqs can be shared by rings (7.x).
                "refs": "refs.refs.counter",
            },
        )
        try:
            q = reader.read(ifq)
            if q["areas"] is not None:
                if not 0 <= q["nr_areas"] <= MAX_AREAS:
                    self.problems.add("io_zcrx_ifq", ifq, f"impossible nr_areas {q['nr_areas']}")
                    return []
                addresses = read_words(prog, q["areas"], q["nr_areas"]) if q["nr_areas"] else ()
            else:
                addresses = (q["area"],) if q["area"] else ()
        except drgn.FaultError as e:
            self.problems.fault("io_zcrx_ifq", ifq, e)
            return []
        shift = q["niov_shift"] if q["niov_shift"] is not None else self.page_shift
        if not self.page_shift <= shift < 32:
            self.problems.add("io_zcrx_ifq", ifq, f"impossible niov_shift {shift}")
            return []
        netdev = self._netdev(q["netdev"])
        pools = self._pools_of(ifq, "io_uring")
        out = []
        for address in addresses:
            found = self._zcrx_span(ifq, address)
            if found is None:
                continue
            span, area_id, size = found
            out.append(
                ProviderArea(
                    kind="io_uring",
                    id=area_id,
                    address=address,
                    ifq=ifq,
                    netdev=netdev,
                    queues=(q["if_rxq"],) if q["netdev"] else (),
                    pools=tuple(sorted(p.id for p in pools if p.id is not None)),
                    pool_addresses=tuple(p.address for p in pools),
                    refcount=q["refs"],
                    direction="rx",
                    niov_shift=shift,
                    size=size,
                    spans=(span,),
                )
            )
        return out

    def _zcrx_span(self, ifq: int, address: int) -> Optional[Tuple[NiovSpan, int, int]]:
        prog = self.prog
        reader = StructReader(
            prog,
            "struct io_zcrx_area",
            {
                "niovs": "nia.niovs",
                "num_niovs": "nia.num_niovs",
                "base_virtual": "nia.base_virtual",
                "ifq": "ifq",
                "user_refs": "user_refs",
                "area_id": "area_id",
                "free_count": "free_count",
                "freelist": "freelist",
                "size": "mem.size",
            },
        )
        try:
            a = reader.read(address)
        except drgn.FaultError as e:
            self.problems.add(
                "io_zcrx_ifq", ifq, f"area pointer {address:#x} leads nowhere ({e.message})"
            )
            return None
        reason = ""
        if a["ifq"] != ifq:
            reason = f"belongs to ifq {a['ifq']:#x}, not {ifq:#x}"
        elif not 0 < a["num_niovs"] <= MAX_NIOVS:
            reason = f"impossible num_niovs {a['num_niovs']}"
        elif a["free_count"] > a["num_niovs"]:
            reason = f"free_count {a['free_count']} > num_niovs {a['num_niovs']}"
        if reason:
            self.problems.add("io_zcrx_area", address, reason)
            return None
        owner = address + drgn.offsetof(reader.type, "nia")
        span = NiovSpan(
            owner=owner,
            niovs=a["niovs"],
            count=a["num_niovs"],
            base_virtual=a["base_virtual"],
            chunk=None,
            user_refs=a["user_refs"],
            freelist=a["freelist"],
            free_count=a["free_count"],
        )
        return span, a["area_id"], a["size"]

    # -- niovs -------------------------------------------------------------

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
        for area in self.areas():
            for pool in area.pool_addresses:
                spans.setdefault(pool, []).extend(area.spans)
        out: Dict[int, Tuple[int, str]] = {}
        for info in self.pools():
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
        return {p.address: p.id for p in self.pools() if p.id is not None}

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

    # -- lookup ------------------------------------------------------------

    def find(self, key: str) -> List[ProviderArea]:
        """
        Areas by ``dmabuf:ID`` (a binding), ``io_uring:ID`` (zcrx areas with
        that area id), ``io_uring:ADDRESS`` or a bare address (of a binding,
        a zcrx area, or the ``struct net_iov_area``/chunk owner its niovs
        name).
        """
        kind, _, value = key.rpartition(":")
        number = int(value, 0)
        out = []
        for area in self.areas():
            if kind and kind != area.kind:
                continue
            if (kind and not value.lower().startswith("0x")) and area.id == number:
                out.append(area)
            elif value.lower().startswith("0x") and (
                number == area.address or any(s.owner == number for s in area.spans)
            ):
                out.append(area)
        return out

    def areas_of_pool(self, pool_id: int) -> List[ProviderArea]:
        """The areas of the provider that fills page pool ``pool_id``."""
        return [a for a in self.areas() if pool_id in a.pools]


def _constant(prog: Program, name: str) -> Optional[int]:
    try:
        return prog.constant(name).value_()
    except LookupError:
        return None

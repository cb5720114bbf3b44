"""drgn code for ``decode`` and ``layout``, and how other snippets tell page-pool pages."""

import json
from typing import Optional, Sequence

from drgn import Program

from netmem_probe.context import netmem_arguments
from netmem_probe.kernel.layout import AGREEMENTS, applies
from netmem_probe.report.table import Table
from netmem_probe.snippets import (
    KEYS,
    Snippet,
    define_sort_key,
    has_member,
    has_object,
    has_type,
    sort_option,
)
from netmem_probe.snippets.pools import define_provider

__all__ = ("decode_code", "define_decoders", "define_is_pp_page", "layout_code")


def define_is_pp_page(s: Snippet) -> None:
    """
    ``is_pp_page(page)`` and ``dma_index(page)`` for the target's scheme,
    chosen by its types; the constants are computed by the code itself, from
    the kernel it runs on (generating it reads no memory).
    """
    prog = s.prog
    if not has_member(prog, "struct page_pool", "dma_mapped"):
        s.define(
            "dma_index",
            '''
            def dma_index(page):
                """None: no DMA index in pp_magic before Linux v6.15."""
                return None
            ''',
        )
        # drgn's is_pp_page() knows the pp_magic signature (and the PGTY_netpp
        # page type of Linux 7.1-rc).
        s.add_from_import("drgn.helpers.linux.net", "is_pp_page")
        return
    s.define(
        "dma_index",
        """
        # POISON_POINTER_DELTA (CONFIG_ILLEGAL_POINTER_VALUE), from a statically
        # initialised timer: its entry.next is TIMER_ENTRY_STATIC, 0x300 + it.
        POISON_POINTER_DELTA = prog["poll_spurious_irq_timer"].entry.next.value_() - 0x300
        PP_SIGNATURE = 0x40 + POISON_POINTER_DELTA
        # Since Linux kernel commit ee62ce7a1d90 ("page_pool: Track DMA-mapped
        # pages and unmap them when destroying the pool") (in v6.15) pp_magic
        # also holds the page's index in its pool's dma_mapped XArray: the bits
        # above PP_SIGNATURE's and below POISON_POINTER_DELTA's, 32 at most.
        PP_DMA_INDEX_SHIFT = (PP_SIGNATURE - POISON_POINTER_DELTA).bit_length()
        if POISON_POINTER_DELTA:
            lowest = (POISON_POINTER_DELTA & -POISON_POINTER_DELTA).bit_length() - 1
            bits = min(32, lowest - PP_DMA_INDEX_SHIFT)
            PP_DMA_INDEX_MASK = ((1 << bits) - 1) << PP_DMA_INDEX_SHIFT
        else:
            PP_DMA_INDEX_MASK = 0
        PP_MAGIC_MASK = ~(PP_DMA_INDEX_MASK | 0x3)


        def dma_index(page):
            return (page.pp_magic.value_() & PP_DMA_INDEX_MASK) >> PP_DMA_INDEX_SHIFT
        """,
    )
    if has_object(prog, "PGTY_netpp"):
        # drgn's is_pp_page() knows the PGTY_netpp page type of Linux 7.1-rc.
        s.add_from_import("drgn.helpers.linux.net", "is_pp_page")
        return
    s.define(
        "is_pp_page",
        '''
        def is_pp_page(page):
            """
            Whether a struct page * belongs to a page pool.  Not drgn's
            is_pp_page(): it compares pp_magic & ~0x3, which the DMA index
            in pp_magic defeats on this kernel.
            """
            return page.pp_magic.value_() & PP_MAGIC_MASK == PP_SIGNATURE
        ''',
    )


def _scheme_name(prog: Program) -> str:
    """How this kernel marks page-pool pages, as ``decode --json`` names it."""
    if has_object(prog, "PGTY_netpp"):
        return "page_type"
    if has_member(prog, "struct page_pool", "dma_mapped"):
        return "pp_magic+dma-index"
    return "pp_magic"


def _define_decode_page(s: Snippet) -> None:
    define_is_pp_page(s)
    s.define(
        "decode_page",
        '''
        VMEMMAP = prog["vmemmap"].value_()
        PAGE_STRUCT_SIZE = sizeof(prog.type("struct page"))
        PAGE_SHIFT = prog["PAGE_SHIFT"].value_()
        VALID_PFNS = [(start, end) for start, end, _ in for_each_valid_page_range(prog)]
        PAGE_KEYS = ("netmem", "kind", "page", "pfn", "phys", "pp", "scheme", "pool", "pool-id",
                     "dma-addr", "dma-index", "pp-ref-count", "refcount", "error")


        def decode_page(netmem):
            """
            A netmem_ref without NET_IOV: the address of a struct page.  Every
            key is there; null where nothing was read or it does not apply.
            """
            row = dict.fromkeys(PAGE_KEYS)
            row.update({"netmem": hex(netmem), "kind": "page", "page": hex(netmem),
                        "scheme": "$scheme"})
            offset = netmem - VMEMMAP
            if not netmem or offset < 0 or offset % PAGE_STRUCT_SIZE:
                return {**row, "error": "not a struct page address"}
            pfn = offset // PAGE_STRUCT_SIZE
            row.update({"pfn": pfn, "phys": hex(pfn << PAGE_SHIFT)})
            if not any(start <= pfn < end for start, end in VALID_PFNS):
                return {**row, "error": "no struct page for this pfn"}
            try:
                # One read of the whole struct page: a hole in a dump faults here.
                page = Object(prog, "struct page *", netmem)[0].read_()
            except FaultError as e:
                return {**row, "error": f"struct page is unreadable ({e})"}
            row["refcount"] = page._refcount.counter.value_()
            if not is_pp_page(Object(prog, "struct page *", netmem)):
                return {**row, "pp": False, "error": "not a page-pool page"}
            pool = page.pp
            try:
                pool_id = pool.user.id.value_()
            except FaultError:
                pool_id = None
            row.update({
                "pp": True,
                "pool": hex(pool.value_()),
                "pool-id": pool_id,
                "dma-addr": hex(page.dma_addr.value_()),
                "dma-index": dma_index(page),
                "pp-ref-count": page.pp_ref_count.counter.value_(),
            })
            return row
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "Object"),
            ("drgn", "sizeof"),
            ("drgn.helpers.linux.mm", "for_each_valid_page_range"),
        ],
        scheme=_scheme_name(s.prog),
    )


def define_niov_desc(s: Snippet) -> None:
    """``desc(niov)``: where a net_iov keeps its page-pool members."""
    if has_member(s.prog, "struct net_iov", "desc"):
        s.define(
            "desc",
            '''
            def desc(niov):
                """A net_iov's page-pool members: niov->desc since Linux 6.17."""
                return niov.desc
            ''',
        )
    else:
        s.define(
            "desc",
            '''
            def desc(niov):
                """A net_iov's page-pool members: in the net_iov itself (before Linux 6.17)."""
                return niov
            ''',
        )


def define_niov_kind(s: Snippet) -> None:
    """``niov_kind(niov)``: ``"dmabuf"`` or ``"io_uring"``."""
    prog = s.prog
    if has_member(prog, "struct net_iov", "type"):
        names = [
            f'prog["{constant}"].value_(): "{kind}",'
            for constant, kind in (("NET_IOV_DMABUF", "dmabuf"), ("NET_IOV_IOURING", "io_uring"))
            if has_object(prog, constant)
        ]
        s.define(
            "niov_kind",
            '''
            NIOV_TYPES = {
                $names
            }


            def niov_kind(niov):
                """Which provider a net_iov is of (net_iov->type since Linux 6.16)."""
                value = niov.type.value_()
                return NIOV_TYPES.get(value, f"unknown ({value})")
            ''',
            names="\n".join(names),
        )
        return
    if not has_member(prog, "struct page_pool", "mp_ops"):
        s.define(
            "niov_kind",
            '''
            def niov_kind(niov):
                """devmem: the only provider before v6.15 (and net_iov has no type before v6.16)."""
                return "dmabuf"
            ''',
        )
        return
    define_provider(s)
    s.define(
        "niov_kind",
        '''
        def niov_kind(niov):
            """Which provider a net_iov is of: its pool's (net_iov has no type before v6.16)."""
            if "io_uring" not in PROVIDER_OPS.values():
                return "dmabuf"  # devmem is this kernel's only provider
            pool = desc(niov).pp
            return provider(pool) if pool else None
        ''',
    )


def _define_decode_net_iov(s: Snippet) -> None:
    prog = s.prog
    if not has_type(prog, "struct net_iov"):
        s.define(
            "decode_net_iov",
            '''
            NET_IOV = 0x1
            NIOV_KEYS = ("netmem", "kind", "net-iov", "owner", "index", "num-niovs", "type", "pool",
                         "pool-id", "dma-addr", "pp-ref-count", "user-refs", "area-id", "dmabuf",
                         "error")


            def decode_net_iov(netmem):
                """This kernel has no struct net_iov (it came with devmem TCP in v6.12)."""
                row = dict.fromkeys(NIOV_KEYS)
                row.update({"netmem": hex(netmem), "kind": "net_iov",
                            "net-iov": hex(netmem & ~NET_IOV)})
                return {**row, "error": "this kernel has no struct net_iov"}
            ''',
        )
        return
    define_niov_desc(s)
    define_niov_kind(s)
    if has_type(prog, "struct net_iov_area"):
        area = """
            # Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov chunk
            # owners") (in v6.15) owner is the struct net_iov_area of a zcrx area
            # or of a devmem chunk owner.
            if kind == "io_uring":
                zcrx = container_of(owner, "struct io_zcrx_area", "nia")
                row["user-refs"] = zcrx.user_refs[index].counter.value_()
                row["area-id"] = zcrx.area_id.value_()
            elif kind == "dmabuf":
                chunk = container_of(owner, "struct dmabuf_genpool_chunk_owner", "area")
                row["dmabuf"] = chunk.binding.id.value_()
            """
        s.add_from_import("drgn", "container_of")
    else:
        area = """
            # Before Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov
            # chunk owners") (in v6.15) owner is the devmem chunk owner itself.
            if kind == "dmabuf":
                row["dmabuf"] = owner.binding.id.value_()
            """
    s.define(
        "decode_net_iov",
        '''
        NET_IOV = 0x1
        NIOV_KEYS = ("netmem", "kind", "net-iov", "owner", "index", "num-niovs", "type", "pool",
                     "pool-id", "dma-addr", "pp-ref-count", "user-refs", "area-id", "dmabuf",
                     "error")


        def decode_net_iov(netmem):
            """
            A netmem_ref with NET_IOV (bit 0) set: a struct net_iov * | 1.  Every
            key is there; null where nothing was read or it does not apply.
            """
            address = netmem & ~NET_IOV
            row = dict.fromkeys(NIOV_KEYS)
            row.update({"netmem": hex(netmem), "kind": "net_iov", "net-iov": hex(address)})
            try:
                # One read of the whole net_iov: any address may be given.
                niov = Object(prog, "struct net_iov *", address)[0].read_()
            except FaultError as e:
                return {**row, "error": f"struct net_iov is unmapped ({e})"}
            owner = niov.owner
            row.update({"owner": hex(owner.value_()),
                        "dma-addr": hex(desc(niov).dma_addr.value_()),
                        "pp-ref-count": desc(niov).pp_ref_count.counter.value_()})
            if not owner:
                return {**row, "error": "net_iov has no owner area"}
            try:
                niovs, num_niovs = owner.niovs.value_(), owner.num_niovs.value_()
            except FaultError as e:
                return {**row, "error": f"owner area is unreadable ({e})"}
            # Its index in the array of net_iovs its owner area holds.
            index, rest = divmod(address - niovs, sizeof(niov.type_))
            row["num-niovs"] = num_niovs
            if not niovs or rest or not 0 <= index < num_niovs:
                return {**row, "error": "net_iov is outside its owner's niovs"}
            pool = desc(niov).pp
            kind = niov_kind(niov)
            try:
                pool_id = pool.user.id.value_() if pool else None
            except FaultError:
                pool_id = None
            row.update({
                "index": index,
                "type": kind,
                "pool": hex(pool.value_()) if pool else None,
                "pool-id": pool_id,
            })
            try:
                $area
            except FaultError:
                pass  # the provider's own structure is unreadable: its fields stay null
            return row
        ''',
        [("drgn", "FaultError"), ("drgn", "Object"), ("drgn", "sizeof")],
        area=area,
    )


def define_decoders(s: Snippet) -> None:
    """``decode_page(netmem)`` and ``decode_net_iov(netmem)``: ``decode``'s records."""
    _define_decode_page(s)
    _define_decode_net_iov(s)


def decode_code(prog: Program, netmem: Sequence[str], **_: object) -> str:
    """drgn code for ``decode NETMEM...``."""
    values = netmem_arguments(netmem)
    s = Snippet(
        prog,
        "netmem-probe decode " + " ".join(hex(v) for v in values),
        "what each netmem_ref points at",
    )
    define_decoders(s)
    s.main(
        """
        NETMEMS = [$values]
        for netmem in NETMEMS:
            row = decode_net_iov(netmem) if netmem & NET_IOV else decode_page(netmem)
            print(json.dumps(row))
        """,
        values=", ".join(hex(v) for v in values),
    )
    return s.get()


def _py(value: object) -> str:
    """A string or tuple of strings as Python source, in double quotes."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ")"
    return json.dumps(value)


# The layout columns that are not a record key, as layout's table orders them.
_LAYOUT_SORT = {
    **{side: f'(row["{side}"]["type"], row["{side}"]["member"])' for side in ("left", "right")},
    **{
        f"{side}-{key}": f'row["{side}"]["{key}"]'
        for side in ("left", "right")
        for key in ("offset", "size")
    },
}


def layout_code(prog: Program, table: Optional[Table] = None, **_: object) -> str:
    """drgn code for ``layout``: the asserts that apply to this kernel, evaluated."""
    s = Snippet(
        prog,
        "netmem-probe layout" + sort_option(table),
        "the layout agreements include/net/netmem.h asserts",
    )
    sort = define_sort_key(s, table, KEYS["layout"], _LAYOUT_SORT)
    asserts = "\n".join(
        f"({_py(a.macro)}, {_py(a.left)},\n {_py(a.right)}, {_py(a.kind)}),"
        for a in AGREEMENTS
        if applies(prog, a)
    )
    s.add_from_import("drgn", "offsetof")
    s.add_from_import("drgn", "sizeof")
    s.main(
        '''
        # The asserts of include/net/netmem.h that this kernel's types have:
        # (macro, (type, member), (type, member), check).  "same-offset": same
        # offset and size; "size-fits": sizeof(left type) <= offsetof(right).
        ASSERTS = [
            $asserts
        ]


        def layout(type_name, member):
            """Offset and size of a member ("*": of the whole type); None if missing."""
            type_ = prog.type(type_name)
            if member == "*":
                return {"type": type_name, "member": member, "offset": 0, "size": sizeof(type_)}
            try:
                offset, size = offsetof(type_, member), sizeof(type_.member(member).type)
            except LookupError:
                offset = size = None
            return {"type": type_name, "member": member, "offset": offset, "size": size}


        rows = []
        for macro, left, right, check in ASSERTS:
            left, right = layout(*left), layout(*right)
            if left["offset"] is None or right["offset"] is None:
                ok = False
            elif check == "size-fits":
                ok = left["size"] <= right["offset"]
            else:
                ok = (left["offset"], left["size"]) == (right["offset"], right["size"])
            rows.append({"assert": macro, "left": left, "right": right, "ok": ok})
        $sort
        for row in rows:
            print(json.dumps(row))
        ''',
        asserts=asserts,
        sort="rows.sort(key=sort_key)" if sort else "",
    )
    return s.get()

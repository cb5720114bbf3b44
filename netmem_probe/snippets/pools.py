"""drgn code for ``pools`` and ``pool``, and the page-pool parts other snippets share."""

from textwrap import dedent
from typing import Optional, Sequence

import click
from drgn import Program

from netmem_probe.kernel.structs import member_exists
from netmem_probe.report.table import Table
from netmem_probe.snippets import (
    KEYS,
    Snippet,
    define_sort_key,
    has_member,
    has_type,
    py_strings,
    sort_option,
)

__all__ = (
    "define_name",
    "define_page_pools",
    "define_pool_places",
    "define_pool_record",
    "define_provider",
    "define_ring_slots",
    "define_variable_address",
    "pool_code",
    "pools_code",
)

XARRAY = "drgn.helpers.linux.xarray"


def define_variable_address(s: Snippet) -> None:
    """``variable_address(name)``: where a kernel variable is, looked up when the script runs."""
    s.define(
        "variable_address",
        '''
        def variable_address(name, filename=None):
            """
            The address of a kernel variable (in filename first, if given), or
            None if this kernel has none.  Looked up when the script runs: with
            debug info or with kallsyms alike, however the script was made.
            """
            for kwargs in ({"filename": filename}, {}) if filename else ({},):
                try:
                    return prog.object(name, **kwargs).address_
                except (LookupError, ValueError):
                    continue
            return None
        ''',
    )


def define_page_pools(s: Snippet) -> None:
    """``PAGE_POOLS`` and ``for_each_pool()``."""
    s.define(
        "for_each_pool",
        '''
        # Every pool is registered in this XArray (net/core/page_pool_user.c),
        # whatever its state; netlink only shows those on a netdev's list.
        try:
            PAGE_POOLS = prog.object("page_pools", filename="page_pool_user.c").address_of_()
        except LookupError:  # no debug info: kallsyms knows no file names
            PAGE_POOLS = prog["page_pools"].address_of_()


        def for_each_pool():
            """Every struct page_pool *, in id order."""
            for _, entry in xa_for_each(PAGE_POOLS):
                yield cast("struct page_pool *", entry)
        ''',
        [(XARRAY, "xa_for_each"), ("drgn", "cast")],
    )


def define_provider(s: Snippet) -> None:
    """``provider(obj)``: the memory provider of a pool or an rx queue's ``mp_params``."""
    prog = s.prog
    if not has_member(prog, "struct page_pool", "mp_priv"):
        s.define(
            "provider",
            '''
            def provider(obj):
                """No memory providers before Linux 6.12 (devmem TCP)."""
                return None
            ''',
        )
        return
    if not has_member(prog, "struct page_pool", "mp_ops"):
        s.define(
            "provider",
            '''
            def provider(obj):
                """
                The memory provider filling a pool (or an rx queue's mp_params).
                Before Linux kernel commit 57afb4830157 ("net: page_pool: create
                hooks for custom memory providers") (in v6.15), devmem was the
                only provider and mp_priv its binding.
                """
                return "dmabuf" if obj.mp_priv else None
            ''',
        )
        return
    define_variable_address(s)
    s.define(
        "provider",
        '''
        # The memory_provider_ops of the providers this kernel has built in.
        PROVIDER_OPS = {variable_address(name): kind for name, kind in (
            ("dmabuf_devmem_ops", "dmabuf"), ("io_uring_pp_zc_ops", "io_uring"))}
        PROVIDER_OPS.pop(None, None)


        def provider(obj):
            """
            The memory provider filling a pool (or an rx queue's mp_params):
            "dmabuf", "io_uring", "unknown" or None, by its mp_ops.
            """
            ops = obj.mp_ops.value_()
            if not ops:
                return None
            return PROVIDER_OPS.get(ops, "unknown")
        ''',
    )


def define_name(s: Snippet) -> None:
    """``name(dev)``: a ``struct net_device *``'s name, or None for NULL."""
    s.define(
        "name",
        """
        def name(dev):
            return dev.name.string_().decode(errors="replace") if dev else None
        """,
    )


def define_pool_record(s: Snippet) -> None:
    """``listed_pools()`` and ``pool_record(pool, listed)``: a pool as ``pools --json`` shows it."""
    prog = s.prog
    define_page_pools(s)
    define_provider(s)
    define_name(s)
    pool_type = prog.type("struct page_pool")
    detach_type = pool_type.member("user").type.member("detach_time").type
    if detach_type.type_name() == "ktime_t":
        detach = """
            # Since Linux kernel commit 28b225282d44 user.detach_time is a ktime_t
            # (CLOCK_BOOTTIME nanoseconds); netlink reports seconds.
            raw = pool.user.detach_time.value_()
            detach_time = raw // 10**9 if raw else None
            """
    else:
        detach = """
            # CLOCK_BOOTTIME seconds here (a ktime_t since Linux kernel commit
            # 28b225282d44).
            raw = pool.user.detach_time.value_()
            detach_time = raw or None
            """
    if member_exists(pool_type, "user.napi_id"):
        napi = """
            # Until Linux kernel commit 67e4bb2ced0f ("net: page_pool: don't try to
            # stash the napi id") (in v6.14), page_pool_list() saved the NAPI id.
            if pool.user.napi_id:
                row["napi-id"] = pool.user.napi_id.value_()
            """
        constants = ""
    else:
        napi = """
            # netlink reads the NAPI id through pool->p.napi, and only valid ones.
            if pool.p.napi and pool.p.napi.napi_id >= MIN_NAPI_ID:
                row["napi-id"] = pool.p.napi.napi_id.value_()
            """
        constants = """
            # napi_id_valid(): NAPI ids start at MIN_NAPI_ID = NR_CPUS + 1.
            MIN_NAPI_ID = prog["__per_cpu_offset"].type_.length + 1
            """
    provider = ""
    if member_exists(pool_type, "mp_priv"):
        provider = dedent("""
            kind = provider(pool)
            if kind == "dmabuf":
                binding = cast("struct net_devmem_dmabuf_binding *", pool.mp_priv)
                row["dmabuf"] = binding.id.value_()
            """)
        # provider() says io_uring when the kernel has io_uring_pp_zc_ops (v6.15+).
        if member_exists(pool_type, "mp_ops") and has_type(prog, "struct io_zcrx_ifq"):
            if has_member(prog, "struct io_zcrx_ifq", "niov_shift"):
                provider += dedent("""
                    elif kind == "io_uring":
                        # Buffers of 1 << niov_shift bytes (Linux 6.17+).
                        ifq = cast("struct io_zcrx_ifq *", pool.mp_priv)
                        row["io-uring"] = {"rx-buf-len": 1 << ifq.niov_shift.value_()}
                    """)
            else:
                provider += dedent("""
                    elif kind == "io_uring":
                        row["io-uring"] = {}  # an empty nest: an io_uring provider
                    """)
    s.define(
        "pool_record",
        '''
        PAGE_SIZE = prog["PAGE_SIZE"].value_()
        NOW = ktime_get_coarse_boottime_ns(prog).value_() // 10**9
        $constants


        def listed_pools():
            """
            pool address -> (netdev, is it loopback) for every pool on a netdev's
            page_pools list, in every namespace: what netlink dumps.
            """
            listed = {}
            for net in for_each_net(prog):
                for dev in for_each_netdev(net):
                    for pool in hlist_for_each_entry("struct page_pool",
                                                     dev.page_pools.address_of_(), "user.list"):
                        listed[pool.value_()] = (dev, dev == net.loopback_dev)
            return listed


        def pool_record(pool, listed):
            """
            A pool: netlink's page-pool-get attributes (left out where netlink
            leaves them out), then what netlink does not show.
            """
            # page_pool_inflight(): two u32 counters, their signed 32-bit distance.
            hold = pool.pages_state_hold_cnt.value_()
            release = pool.pages_state_release_cnt.counter.value_() & 0xFFFFFFFF
            inflight = max(0, (hold - release + 2**31) % 2**32 - 2**31)
            dev, loopback = listed.get(pool.value_(), (None, False))
            if dev is not None:
                # A netdev going away hands its pools to lo (page_pool_unreg_netdev()).
                state = "orphaned" if loopback else "listed"
            elif pool.user.list.pprev:
                state = "unreachable"  # on a list that no namespace's netdev reaches
            else:
                state = "invisible"  # never listed, or unlisted (hlist_del_init())
            $detach
            row = {"id": pool.user.id.value_()}
            if state == "listed" and dev.ifindex != 1:
                row["ifindex"] = dev.ifindex.value_()
            $napi
            row["inflight"] = inflight
            row["inflight-mem"] = inflight * (PAGE_SIZE << pool.p.order.value_())
            if detach_time is not None:
                row["detach-time"] = detach_time
            $provider
            row.update({
                "address": hex(pool.value_()),
                "state": state,
                "detached": bool(raw),
                "detach-age": NOW - detach_time if raw and NOW >= detach_time else None,
                "netdev": name(dev),
                # An orphaned pool's NAPI, while it has one, still names its netdev.
                "orig-netdev": name(pool.p.napi.dev) if state == "orphaned" and pool.p.napi
                else None,
                "queue": $queue,
                "order": pool.p.order.value_(),
                "pool-size": pool.p.pool_size.value_(),
                "nid": pool.p.nid.value_(),
                "cpuid": $cpuid,
                "flags": pool.slow.flags.value_(),
                "dma-map": $dma_map,
                "hold": hold,
                "release": release,
                "destroy-cnt": pool.destroy_cnt.value_(),
            })
            return row
        ''',
        [
            ("drgn", "cast"),
            ("drgn.helpers.linux.list", "hlist_for_each_entry"),
            ("drgn.helpers.linux.net", "for_each_net"),
            ("drgn.helpers.linux.net", "for_each_netdev"),
            ("drgn.helpers.linux.timekeeping", "ktime_get_coarse_boottime_ns"),
        ],
        constants=constants,
        queue="pool.slow.queue_idx.value_() if pool.slow.netdev else None"
        if member_exists(pool_type, "slow.queue_idx")
        else "None",  # no slow.queue_idx before Linux 6.12
        # no cpuid, dma_map bit before Linux 6.9: PP_FLAG_DMA_MAP in the flags
        cpuid="pool.cpuid.value_()" if member_exists(pool_type, "cpuid") else "None",
        dma_map="bool(pool.dma_map)"
        if member_exists(pool_type, "dma_map")
        else "bool(pool.slow.flags & 1)",
        detach=detach,
        napi=napi,
        provider=provider,
    )


def define_ring_slots(s: Snippet) -> None:
    """``ring_slots(ring)``: the slots of a ``struct ptr_ring`` that hold entries."""
    s.define(
        "ring_slots",
        '''
        def ring_slots(ring):
            """
            The slots of a struct ptr_ring that hold entries, oldest first:
            consumer_head up to producer, wrapping.  Equal indexes mean empty,
            or full if that slot is taken.  Consumed slots are zeroed lazily,
            so a non-NULL slot outside the window is stale.
            """
            size = ring.size.value_()
            if not size:
                return []
            head, producer = ring.consumer_head.value_(), ring.producer.value_()
            if producer == head:
                count = size if ring.queue[head] else 0
            else:
                count = (producer - head) % size
            return [(head + i) % size for i in range(count)]
        ''',
    )


def define_pool_places(s: Snippet) -> None:
    """``pool_places(pool)``: the netmems the pool's cache and ring hold."""
    define_ring_slots(s)
    s.define(
        "pool_places",
        '''
        def pool_places(pool):
            """netmem -> "cache" or "ring", for what the pool itself holds."""
            places = {}
            for slot in ring_slots(pool.ring):
                places[pool.ring.queue[slot].value_()] = "ring"
            for i in range(pool.alloc.count.value_()):
                places[pool.alloc.cache[i].value_()] = "cache"
            return places
        ''',
    )


def _selection(netdev: Optional[str], states: Sequence[str], show_all: bool, sort: bool) -> str:
    code = []
    if netdev is not None:
        code.append(
            f"# --netdev: its pools, also those orphaned from it\n"
            f'rows = [row for row in rows if {netdev!r} in (row["netdev"], '
            f'row["orig-netdev"])]'
        )
    if states:
        code.append(
            f"STATES = {py_strings(dict.fromkeys(states))}\n"
            "rows = [row for row in rows\n"
            '        if row["state"] in STATES or ("detached" in STATES and '
            'row["detached"])]'
        )
    if not show_all:
        code.append('rows = [row for row in rows if row["inflight"]]  # --inflight-only')
    if sort:
        code.append("rows.sort(key=sort_key)")
    return "\n".join(code)


def pools_code(
    prog: Program,
    netdev: Optional[str] = None,
    states: Sequence[str] = (),
    show_all: bool = True,
    table: Optional[Table] = None,
    **_: object,
) -> str:
    """drgn code for ``pools`` with these filters, in ``table``'s --sort order."""
    options = "".join(
        [
            f" --netdev {netdev}" if netdev else "",
            "".join(f" --state {state}" for state in states),
            sort_option(table, natural="id"),
            "" if show_all else " --inflight-only",
        ]
    )
    s = Snippet(prog, f"netmem-probe pools{options}", "every page pool, listed or not")
    define_pool_record(s)
    # The registry is in id order, the default --sort.
    sort = define_sort_key(s, table, KEYS["pools"], natural="id")
    s.main(
        """
        listed = listed_pools()
        rows = [pool_record(pool, listed) for pool in for_each_pool()]
        $selection
        for row in rows:
            print(json.dumps(row))
        """,
        selection=_selection(netdev, states, show_all, sort),
    )
    return s.get()


def _pool_lookup(key: str) -> str:
    try:
        by_address = key.lower().startswith("0x")
        wanted = int(key, 16) if by_address else int(key, 10)
    except ValueError:
        raise click.BadParameter(
            f"{key!r} is neither a pool id nor an address", param_hint="POOL"
        ) from None
    if by_address:
        return f"""
            pool = Object(prog, "struct page_pool *", {wanted:#x})
            # A pool is registered in page_pools under its id.
            if xa_load(PAGE_POOLS, pool.user.id).value_() != pool.value_():
                raise SystemExit("no page pool at {wanted:#x}")
            """
    return f"""
        pool = cast("struct page_pool *", xa_load(PAGE_POOLS, {wanted}))
        if not pool:
            raise SystemExit("no page pool with id {wanted}")
        """


def _define_breakdown(s: Snippet) -> None:
    define_ring_slots(s)
    if member_exists(s.prog.type("struct page_pool"), "dma_mapped"):
        dma_mapped = """
            # Since Linux kernel commit ee62ce7a1d90 ("page_pool: Track DMA-mapped
            # pages and unmap them when destroying the pool") (in v6.15) the pool
            # indexes every page it has DMA-mapped.
            dma_mapped = sum(1 for _ in xa_for_each(pool.dma_mapped.address_of_()))
            """
    else:
        dma_mapped = "dma_mapped = None  # no pool->dma_mapped before Linux v6.15"
    s.define(
        "breakdown",
        '''
        def breakdown(pool, inflight):
            """Where a pool's in-flight pages sit, as far as the pool sees."""
            cache = pool.alloc.count.value_()
            ring = len(ring_slots(pool.ring))
            $dma_mapped
            return {"alloc-cache": cache, "ring": ring, "dma-mapped": dma_mapped,
                    "out": inflight - cache - ring}
        ''',
        [(XARRAY, "xa_for_each")],
        dma_mapped=dma_mapped,
    )


def _define_stats(s: Snippet) -> None:
    if not member_exists(s.prog.type("struct page_pool"), "recycle_stats"):
        s.define(
            "stats",
            '''
            def stats(pool):
                """None: this kernel has no CONFIG_PAGE_POOL_STATS."""
                return None
            ''',
        )
        return
    s.define(
        "stats",
        '''
        ALLOC_STATS = {"alloc-fast": "fast", "alloc-slow": "slow",
                       "alloc-slow-high-order": "slow_high_order", "alloc-empty": "empty",
                       "alloc-refill": "refill", "alloc-waive": "waive"}
        RECYCLE_STATS = {"recycle-cached": "cached", "recycle-cache-full": "cache_full",
                         "recycle-ring": "ring", "recycle-ring-full": "ring_full",
                         "recycle-released-refcnt": "released_refcnt"}


        def stats(pool):
            """
            page-pool-stats-get: the pool's allocation counters (NAPI context
            only, so not per CPU) and its per-CPU recycle counters, summed.
            """
            out = {key: getattr(pool.alloc_stats, member).value_()
                   for key, member in ALLOC_STATS.items()}
            out.update(dict.fromkeys(RECYCLE_STATS, 0))
            if pool.recycle_stats:
                for cpu in for_each_possible_cpu(prog):
                    recycle = per_cpu_ptr(pool.recycle_stats, cpu)
                    for key, member in RECYCLE_STATS.items():
                        out[key] += getattr(recycle, member).value_()
            return out
        ''',
        [
            ("drgn.helpers.linux.cpumask", "for_each_possible_cpu"),
            ("drgn.helpers.linux.percpu", "per_cpu_ptr"),
        ],
    )


def pool_code(prog: Program, pool_key: str, **_: object) -> str:
    """drgn code for ``pool POOL``."""
    lookup = _pool_lookup(pool_key)
    s = Snippet(
        prog,
        f"netmem-probe pool {pool_key}",
        "one page pool, where its in-flight pages sit, and its stats",
    )
    define_pool_record(s)
    _define_breakdown(s)
    _define_stats(s)
    s.add_from_import(XARRAY, "xa_load")
    if "Object(" in lookup:
        s.add_from_import("drgn", "Object")
    s.main(
        """
        $lookup
        row = pool_record(pool, listed_pools())
        row["breakdown"] = breakdown(pool, row["inflight"])
        row["stats"] = stats(pool)
        print(json.dumps(row))
        """,
        lookup=lookup,
    )
    return s.get()

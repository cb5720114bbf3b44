"""drgn code for ``pages``, ``holders`` and ``leaks``: page-pool pages and who holds them."""

from typing import Optional, Sequence

import click
from drgn import Program

from netmem_probe.context import netmem_arguments
from netmem_probe.report.table import Table
from netmem_probe.snippets import (
    COUNT_KEYS,
    HOLDER_KEYS,
    KEYS,
    Snippet,
    define_sort_key,
    fill,
    has_member,
    has_type,
    sort_option,
)
from netmem_probe.snippets.netmem import define_decoders, define_is_pp_page, define_niov_desc
from netmem_probe.snippets.places import (
    define_gro_lists,
    define_problems,
    define_rx_rings,
    define_skb_places,
    define_static_data,
)
from netmem_probe.snippets.pools import (
    define_pool_places,
    define_pool_record,
    define_provider,
    define_ring_slots,
)
from netmem_probe.snippets.providers import define_areas, define_niov_states

__all__ = ("holders_code", "leaks_code", "pages_code")


def _define_pool_pages(s: Snippet) -> None:
    define_is_pp_page(s)
    s.define(
        "pool_pages",
        '''
        def pool_pages(pools):
            """
            (pfn, struct page *) of every page of these pools (addresses), in pfn
            order.  One drgn Object per struct page is simple and about 0.3 M pages
            a second; netmem-probe reads the memmap in 2 MiB chunks instead.
            """
            for start_pfn, end_pfn, mem_map in for_each_valid_page_range(prog):
                for pfn in range(start_pfn, end_pfn):
                    page = mem_map + pfn
                    if is_pp_page(page) and page.pp.value_() in pools:
                        yield pfn, page
        ''',
        [("drgn.helpers.linux.mm", "for_each_valid_page_range")],
    )


def _pool_selection(pool_ids: Sequence[int], all_pools: bool) -> str:
    if pool_ids:
        ids = ", ".join(str(i) for i in dict.fromkeys(pool_ids))
        return f"""
            # --pool: these pools, in this order.
            by_id = {{row["id"]: (pool, row) for pool, row in every}}
            pools = [by_id[pool_id] for pool_id in ({ids},) if pool_id in by_id]
            """
    if all_pools:
        return "pools = every  # --all-pools"
    return """
        # The pages "stalled pool shutdown" waits for: detached pools' in flight.
        pools = [(pool, row) for pool, row in every if row["detached"] and row["inflight"]]
        """


def _options(pool_ids: Sequence[int], all_pools: bool) -> str:
    return "".join(f" --pool {i}" for i in pool_ids) + (" --all-pools" if all_pools else "")


def pages_code(
    prog: Program,
    pool_ids: Sequence[int] = (),
    all_pools: bool = False,
    count: bool = False,
    table: Optional[Table] = None,
    **_: object,
) -> str:
    """drgn code for ``pages``, with its pool selection, or ``--count``."""
    if pool_ids and all_pools:
        raise click.UsageError("--pool and --all-pools are mutually exclusive")
    keys, other = (COUNT_KEYS, KEYS["pages"]) if count else (KEYS["pages"], COUNT_KEYS)
    if table is not None and table.sort is not None and table.sort.name in set(other) - set(keys):
        # A column of the other records (a page's, or a pool's count): none of
        # these records has it, and the command keeps their order.
        table = None
    s = Snippet(
        prog,
        "netmem-probe pages"
        + _options(pool_ids, all_pools)
        + (" --count" if count else "")
        + sort_option(table),
        "per-pool page counts against the in-flight counts"
        if count
        else "the page-pool pages of the memmap",
    )
    sort = define_sort_key(s, table, keys)
    define_pool_record(s)
    define_pool_places(s)
    _define_pool_pages(s)
    s.main(
        """
        listed = listed_pools()
        every = [(pool, pool_record(pool, listed)) for pool in for_each_pool()]
        $selection
        places = {pool.value_(): pool_places(pool) for pool, _ in pools}
        rows = {pool.value_(): row for pool, row in pools}
        $report
        """,
        selection=_pool_selection(pool_ids, all_pools),
        report=fill(
            """
            found = {address: {"cache": 0, "ring": 0, "out": 0} for address in rows}
            for _, page in pool_pages(rows):
                address = page.pp.value_()
                found[address][places[address].get(page.value_(), "out")] += 1
            found_rows = []
            for pool, row in pools:
                if provider(pool):
                    # A memory provider's pool hands out net_iovs, which the memmap lacks.
                    counts, total = dict.fromkeys(("cache", "ring", "out")), None
                else:
                    counts = found[pool.value_()]
                    total = sum(counts.values())
                found_rows.append({
                    "id": row["id"], "inflight": row["inflight"], "found": total,
                    "alloc-cache": counts["cache"], "ring": counts["ring"], "out": counts["out"],
                    "difference": None if total is None else total - row["inflight"],
                })
            $sort
            for row in found_rows:
                print(json.dumps(row))
            """
            if count
            else """
            found_rows = ({
                "pfn": pfn, "page": hex(page.value_()), "pool-id": rows[page.pp.value_()]["id"],
                "pool": hex(page.pp.value_()), "pp-ref-count": page.pp_ref_count.counter.value_(),
                "refcount": page._refcount.counter.value_(), "dma-index": dma_index(page),
                "where": places[page.pp.value_()].get(page.value_(), "out"),
            } for pfn, page in pool_pages(rows))
            $sort
            for row in found_rows:
                print(json.dumps(row))
            """,
            sort=(
                "found_rows.sort(key=sort_key)"
                if count
                else "found_rows = sorted(found_rows, key=sort_key)  # --sort: every page first"
            )
            if sort
            else "",
        ),
    )
    return s.get()


def _define_targets(s: Snippet) -> None:
    """``target(value)``: what ``holders`` looks for, for a command-line value."""
    define_is_pp_page(s)
    define_niov_desc(s)
    define_decoders(s)
    s.define(
        "targets",
        '''
        DIRECT_MAP = phys_to_virt(prog, 0).value_()


        def pool_id_of(pool):
            """A struct page_pool *'s id, or None for NULL or an unreadable pool."""
            try:
                return pool.user.id.value_() if pool else None
            except FaultError:
                return None


        def page_target(page):
            """What names a struct page *: its address (its netmem_ref), and pointers
            into its memory (the direct map of its 2**order pages)."""
            pool = page.pp if is_pp_page(page) else Object(prog, "struct page_pool *", 0)
            try:
                order = pool.p.order.value_() if pool else 0
            except FaultError:
                order = 0
            start = DIRECT_MAP + (page_to_pfn(page).value_() << PAGE_SHIFT)
            return {"netmem": page.value_(), "kind": "page", "address": page.value_(),
                    "words": {page.value_()}, "span": (start, start + (1 << PAGE_SHIFT + order)),
                    "pool": pool.value_(), "pool-id": pool_id_of(pool), "owner": None}


        def target(value):
            """A net_iov netmem_ref (bit 0 set), a struct page, or an address in
            the direct map (the page it lies in), as decode tells them."""
            if value & NET_IOV:
                row = decode_net_iov(value)
                if not row["error"]:
                    address = int(row["net-iov"], 16)
                    return {"netmem": value, "kind": "net_iov", "address": address,
                            "words": {value, address}, "span": None,
                            "pool": int(row["pool"] or "0", 16), "pool-id": row["pool-id"],
                            "owner": int(row["owner"], 16)}
                # Not a net_iov: an odd address in the direct map still names a page.
            pfn = (value - DIRECT_MAP) >> PAGE_SHIFT
            if value >= DIRECT_MAP and any(start <= pfn < end for start, end in VALID_PFNS):
                value = pfn_to_page(prog, pfn).value_()
            row = decode_page(value)
            if row["pfn"] is None or row["refcount"] is None:
                raise SystemExit(f"{value:#x} is not a netmem_ref, struct page or direct-map "
                                 f"address ({row['error']})")
            return page_target(Object(prog, "struct page *", value))
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "Object"),
            ("drgn.helpers.linux.mm", "page_to_pfn"),
            ("drgn.helpers.linux.mm", "pfn_to_page"),
            ("drgn.helpers.linux.mm", "phys_to_virt"),
        ],
    )


def _define_pool_holders(s: Snippet) -> None:
    prog = s.prog
    define_ring_slots(s)
    if has_member(prog, "struct page_pool", "frag_page"):
        frag_page = """
            # The page being cut into fragments (page_pool_alloc_frag()).
            arrays.append((pool.frag_page.address_, pool.frag_page.address_ + 8,
                           "pool-frag-page", pool_id, {pool.frag_page.address_}))
            """
    else:
        frag_page = ""
    s.define(
        "pool_arrays",
        '''
        def pool_arrays():
            """(start, end, kind, pool id, live slot addresses) of each pool's alloc
            cache and ptr_ring: a netmem in a live slot is the pool's."""
            arrays = []
            for pool in for_each_pool():
                pool_id = pool.user.id.value_()
                cache = pool.alloc.cache
                live = {cache.address_ + 8 * i for i in range(pool.alloc.count.value_())}
                arrays.append((cache.address_, cache.address_ + sizeof(cache), "pool-cache",
                               pool_id, live))
                queue, size = pool.ring.queue.value_(), pool.ring.size.value_()
                if queue and size:
                    live = {queue + 8 * slot for slot in ring_slots(pool.ring)}
                    arrays.append((queue, queue + 8 * size, "pool-ring", pool_id, live))
                $frag_page
            return arrays


        def pool_holder(address):
            """(kind, pool id) if the word at address is in a pool's cache or ring
            ("-stale": a consumed slot not cleared yet)."""
            for start, end, kind, pool_id, live in POOL_ARRAYS:
                if start <= address < end:
                    return (kind if address in live else kind + "-stale"), pool_id
            return None
        ''',
        [("drgn", "sizeof")],
        frag_page=frag_page,
    )
    if has_member(prog, "struct page_pool", "dma_mapped"):
        s.define(
            "in_dma_mapped",
            '''
            XA_NODE = prog.type("struct xa_node")
            XA_CHUNK_SIZE = XA_NODE.member("slots").type.length


            def in_dma_mapped(address, target):
                """Whether the word at address is the page's entry in its pool's
                dma_mapped XArray (bookkeeping of DMA-mapped pages, not a holder)."""
                if target["kind"] != "page" or not target["pool"]:
                    return False
                index = dma_index(Object(prog, "struct page *", target["address"]))
                xa = Object(prog, "struct page_pool *", target["pool"]).dma_mapped
                if not index:
                    return False
                if address == xa.xa_head.address_:
                    return True
                # A slot of a bottom node (shift 0) of that XArray, at the index.
                node = Object(prog, XA_NODE, address=address - offsetof(XA_NODE, "slots")
                              - 8 * (index % XA_CHUNK_SIZE))
                try:
                    return node.shift == 0 and node.array.value_() == xa.address_
                except FaultError:
                    return False
            ''',
            [("drgn", "FaultError"), ("drgn", "Object"), ("drgn", "offsetof")],
        )
    else:
        s.define(
            "in_dma_mapped",
            '''
            def in_dma_mapped(address, target):
                """No pool->dma_mapped before Linux v6.15."""
                return False
            ''',
        )


def _define_skbs(s: Snippet) -> None:
    define_problems(s)
    s.define(
        "skbs",
        '''
        SK_BUFF = prog.type("struct sk_buff")
        SHINFO = prog.type("struct skb_shared_info")
        MAX_FRAGS = SHINFO.member("frags").type.length
        # How far below its skb_shared_info an skb's head may start (skb->end).
        MAX_SKB_END = 64 << 10
        FAMILIES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet", 44: "xdp"}


        def valid_skb(skb):
            """Whether an sk_buff's fields make sense: the word that led to it may
            be anything."""
            try:
                head, end = skb.head.value_(), skb.end.value_()
                return bool(head and 0 < end <= 1 << 20
                            and head <= skb.data.value_() <= head + end
                            and skb.tail <= end and skb.data_len <= skb.len
                            and 0 < skb.users.refs.counter.value_() < 1 << 20)
            except FaultError:
                return False


        def frag_of(address, value):
            """(skb_shared_info address, i) if the word at address is the
            frags[i].$frag_member of a plausible skb_shared_info."""
            for i in range(MAX_FRAGS):
                shinfo = Object(prog, "struct skb_shared_info *",
                                address - offsetof(SHINFO, f"frags[{i}].$frag_member"))
                try:
                    nr_frags = shinfo.nr_frags.value_()
                    if not i < nr_frags <= MAX_FRAGS or not 0 < shinfo.dataref.counter < 1 << 20:
                        continue
                    netmems = [shinfo.frags[j].$frag_member.value_() for j in range(nr_frags)]
                except FaultError:
                    continue
                if netmems[i] == value and all(netmems):
                    return shinfo.value_(), i
            return None


        def skbs_of(shinfos):
            """
            The sk_buff of each skb_shared_info (at skb->head + skb->end): found by
            a search for skb->head values below it.  Of the clones sharing one, the
            lowest the slab does not record as free: a freed clone keeps its head
            and end, so it still looks valid.
            """
            found = {}
            if not shinfos:
                return found  # no frag found: nothing to search for
            head = offsetof(SK_BUFF, "head")
            for address, value in search(set(), [(s - MAX_SKB_END, s) for s in shinfos]):
                skb = Object(prog, "struct sk_buff *", address - head)
                if valid_skb(skb) and skb_shinfo(skb).value_() in shinfos:
                    found.setdefault(skb_shinfo(skb).value_(), []).append(skb)
            return {shinfo: live_clone(skbs) for shinfo, skbs in found.items()}


        def live_clone(skbs):
            """The lowest of the sk_buffs the slab does not record as free."""
            skbs = sorted(skbs, key=lambda skb: skb.value_())
            if len(skbs) > 1:
                skbs = [skb for skb in skbs if is_free(skb) is not True] or skbs
            return skbs[0]


        def is_free(skb):
            """Whether the slab records the sk_buff as free; None if not known."""
            try:
                info = slab_object_info(prog, skb.value_())
            except FaultError:
                return None
            return None if info is None or info.allocated is None else not info.allocated


        def skb_at(address, target):
            """The sk_buff whose head or data is the word at address, pointing into
            the target page."""
            lo, hi = target["span"]
            for field in ("head", "data"):
                skb = Object(prog, "struct sk_buff *", address - offsetof(SK_BUFF, field))
                if valid_skb(skb) and lo <= getattr(skb, field).value_() < hi:
                    return skb
            return None


        def sock_at(address):
            sk = Object(prog, "struct sock *", address)
            try:
                return sk if sk.__sk_common.skc_family.value_() in FAMILIES else None
            except FaultError:
                return None


        def queue_of(skb):
            """The skbs after skb along ->next, if they lead back to it: a queue."""
            nodes, seen, node = [], {skb.value_()}, skb.next.value_()
            while node != skb.value_():
                if not node or node in seen or len(nodes) >= 1 << 16:
                    return None
                seen.add(node)
                nodes.append(node)
                try:
                    node = prog.read_word((node + NEXT) % (1 << 64))
                except FaultError:
                    return None  # (skb->next of an skb in an rbtree is its parent)
            return nodes


        # A UDP socket's reader moves what has arrived into its own
        # reader_queue, since Linux kernel commit 2276f58ac589 ("udp: use a
        # separate rx queue for packet reception") (in v4.11).
        SOCK_QUEUES = []  # (queue, offset of its struct sk_buff_head in the socket)
        for queue, owner, member in (
            ("receive", "struct sock", "sk_receive_queue"),
            ("error", "struct sock", "sk_error_queue"),
            ("receive", "struct udp_sock", "reader_queue"),
        ):
            try:
                SOCK_QUEUES.append((queue, offsetof(prog.type(owner), member)))
            except LookupError:
                pass


        try:
            OFO_ROOT = offsetof(prog.type("struct tcp_sock"), "out_of_order_queue.rb_node")
            RBNODE = offsetof(SK_BUFF, "rbnode")
        except LookupError:
            OFO_ROOT = None  # no TCP types
        # An rbtree of n nodes is at most 2 * log2(n + 1) deep.
        MAX_RB_DEPTH = 128


        def in_ofo_queue(sk, skb):
            """
            Whether skb is in the TCP out-of-order queue of socket sk: an rbtree of
            skbs through skb->rbnode, rooted at tcp_sock.out_of_order_queue.  The
            climb from skb's node along its parents (__rb_parent_color without the
            color bits) must end at the root; a climb that loops or goes deeper than
            any rbtree is reported.
            """
            if OFO_ROOT is None:
                return False
            try:
                root = prog.read_word(sk.value_() + OFO_ROOT)
            except FaultError:
                return False
            node = skb.value_() + RBNODE
            seen = {node}
            for _ in range(MAX_RB_DEPTH if root else 0):
                try:
                    parent = prog.read_word(node) & ~3
                except FaultError as e:
                    fault("TCP out-of-order rbtree", node, e)
                    return False
                if not parent:
                    return node == root
                if parent in seen:
                    problem("TCP out-of-order rbtree", skb.value_(), "parent chain loops")
                    return False
                seen.add(parent)
                node = parent
            if root:
                problem("TCP out-of-order rbtree", skb.value_(),
                        f"deeper than {MAX_RB_DEPTH} levels (corrupt?)")
            return False


        def socket_of(skb):
            """
            The socket and queue that hold an skb.  A socket queue is a ring of
            skbs through its struct sk_buff_head, the node whose qlen counts the
            others; UDP leaves skb->sk NULL, so the queue tells the socket.
            """
            try:
                nodes = queue_of(skb)
                if nodes is not None:
                    for head in nodes:
                        if Object(prog, "struct sk_buff_head *", head).qlen != len(nodes):
                            continue
                        for queue, offset in SOCK_QUEUES:
                            sk = sock_at(head - offset)
                            if sk is not None and (not skb.sk or skb.sk == sk):
                                return sk.value_(), queue
                    return None, None
                sk = sock_at(skb.sk.value_()) if skb.sk else None
                if sk is not None:
                    # Not on a queue: maybe on the socket's backlog, a NULL-ended list.
                    node, steps = sk.sk_backlog.head, 0
                    while node and node != skb and steps < 1 << 16:
                        node, steps = node.next, steps + 1
                    if node == skb:
                        return sk.value_(), "backlog"
                    return sk.value_(), "tcp-ofo" if in_ofo_queue(sk, skb) else None
            except FaultError:
                pass
            return None, None
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "Object"),
            ("drgn", "offsetof"),
            ("drgn.helpers.linux.net", "skb_shinfo"),
            ("drgn.helpers.linux.slab", "slab_object_info"),
        ],
        # Since Linux kernel commit 21d2e6737c97 ("net: add netmem to
        # skb_frag_t") (in v6.9) frags[i].netmem; before, frags[i].bv_page.
        frag_member="netmem"
        if has_member(s.prog, "struct skb_shared_info", "frags[0].netmem")
        else "bv_page",
    )


def _define_holders(s: Snippet) -> None:
    """``find_holders(targets)``: every reference to each target, classified."""
    _define_targets(s)
    define_pool_record(s)
    _define_pool_holders(s)
    _define_skbs(s)
    define_skb_places(s)
    define_rx_rings(s)
    define_gro_lists(s)
    define_static_data(s)
    s.define(
        "find_holders",
        '''
        def search(values, spans):
            """
            (address, value) of every word of RAM equal to one of values or in one
            of spans ([lo, hi)).  drgn searches in C, through physical memory so
            that each page is searched once; pages a dump lacks are skipped.
            """
            if not values and not spans:
                return  # nothing to look for (drgn refuses an empty search)
            # drgn tests each word against every range: overlapping and adjacent
            # spans merged (pages next to each other, skb windows that overlap)
            # make fewer ranges and the same matches.
            ranges = []
            for lo, hi in sorted(spans):
                if ranges and lo <= ranges[-1][1]:
                    ranges[-1][1] = max(ranges[-1][1], hi)
                else:
                    ranges.append([lo, hi])
            it = prog.search_memory_word(*values, *[(lo, hi - 1) for lo, hi in ranges])
            for start, end in VALID_PFNS:
                lo, hi = start << PAGE_SHIFT, (end << PAGE_SHIFT) - 1
                while lo <= hi:
                    it.set_address_range(lo, hi, True)
                    try:
                        for address, value in it:
                            yield DIRECT_MAP + address, value
                        break
                    except FaultError as e:
                        if not lo <= e.address <= hi:
                            break
                        lo = ((e.address >> PAGE_SHIFT) + 1) << PAGE_SHIFT


        def holder(target, address, value, kind, skb=None, frag=None, pool_id=None):
            """
            A row: one reference to a target.  An skb waits on a CPU or in a qdisc,
            else on a socket's queue (or its backlog or TCP out-of-order queue),
            else (with no socket) maybe in a driver's rx ring (veth's) or a GRO
            list; a reference that is a ring's slot names the ring.
            """
            sock = queue = None
            ring = RINGS.get(address)
            if skb is not None:
                queue = SKB_PLACES.get(skb.value_())
                if queue is None:
                    sock, queue = socket_of(skb)
                    if sock is None and skb.value_() in RING_SKBS:
                        queue, ring = "rx-ring", RING_SKBS[skb.value_()]
                    elif sock is None and skb.value_() in GRO_SKBS:
                        queue = "gro"
            driver, _, rx_queue, slot, _ = ring or (None,) * 5
            return {"kind": kind, "address": hex(address), "value": hex(value),
                    "skb": hex(skb.value_()) if skb is not None else None, "frag": frag,
                    "sock": hex(sock) if sock else None, "queue": queue, "pool-id": pool_id,
                    "driver": driver, "rx-queue": rx_queue, "slot": slot}


        def find_holders(targets):
            """netmem -> the rows of every reference to it, by address."""
            by_word = {word: t for t in targets for word in t["words"]}
            spans = [t for t in targets if t["span"]]
            found = {t["netmem"]: [] for t in targets}
            frags, skb_heads = [], set()
            for address, value in search(set(by_word), [t["span"] for t in spans]):
                t = by_word.get(value)
                if t is None:
                    # A pointer into a page: an skb whose head is in it (head and
                    # data both point there: one row per skb), or unknown.
                    t = next(t for t in spans if t["span"][0] <= value < t["span"][1])
                    skb = skb_at(address, t)
                    if skb is None:
                        kind = "rx-ring" if address in RINGS else place_kind(address)
                        found[t["netmem"]].append(holder(t, address, value, kind))
                    elif (t["netmem"], skb.value_()) not in skb_heads:
                        skb_heads.add((t["netmem"], skb.value_()))
                        found[t["netmem"]].append(holder(t, address, value, "skb-head", skb))
                    continue
                in_pool = pool_holder(address)
                if in_pool is not None:
                    row = holder(t, address, value, in_pool[0], pool_id=in_pool[1])
                elif in_dma_mapped(address, t):
                    pool_id = Object(prog, "struct page_pool *", t["pool"]).user.id.value_()
                    row = holder(t, address, value, "pool-dma-mapped", pool_id=pool_id)
                elif value == t["netmem"] and (frag := frag_of(address, value)):
                    frags.append((t, address, value, *frag))  # its skb is found below
                    continue
                elif t["kind"] == "net_iov" and (sk := token_at(address, value)):
                    row = holder(t, address, value, "devmem-token")
                    row["sock"] = hex(sk)  # the TCP socket user space holds it through
                elif t["owner"] and address == t["owner"] + NIOVS_OFFSET:
                    row = holder(t, address, value, "net-iov-area")  # the area's niovs
                else:
                    kind = "rx-ring" if address in RINGS else place_kind(address)
                    row = holder(t, address, value, kind)
                found[t["netmem"]].append(row)
            skbs = skbs_of({shinfo for _, _, _, shinfo, _ in frags})
            for t, address, value, shinfo, i in frags:
                row = holder(t, address, value, "skb-frag", skbs.get(shinfo), i)
                found[t["netmem"]].append(row)
            for rows in found.values():
                rows.sort(key=lambda row: int(row["address"], 16))
            return found


        POOL_ARRAYS = pool_arrays()
        SKB_PLACES = skb_places()
        RINGS, RING_SKBS = rx_rings()
        STATIC_DATA = static_data()
        GRO_SKBS = gro_lists()
        $niovs_offset
        $token_at
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "Object"),
            ("drgn", "offsetof"),
            ("drgn", "sizeof"),
            ("drgn.helpers.linux.xarray", "xa_load"),
        ],
        niovs_offset=_niovs_offset(s.prog),
        token_at=_token_at(s.prog),
    )


def _token_at(prog: Program) -> str:
    """``token_at(address, value)``: the TCP socket of a devmem TCP token's slot."""
    if not has_member(prog, "struct sock", "sk_user_frags") or (
        prog.type("struct sock").member("sk_user_frags").type.unaliased().type_name()
        != "struct xarray"
    ):
        return "def token_at(address, value):\n    return None  # no devmem TCP tokens (v6.12+)"
    return fill(
        '''
        def token_at(address, value):
            """
            The struct sock address of the TCP socket whose sk_user_frags XArray
            (devmem TCP tokens: a netmem_ref per token, since Linux 6.12) has its
            slot at address, else None.  The slot's leaf xa_node points back at
            the XArray (node->array); the token, summed up the node's parents, must
            load the same entry, and the parents must end at the XArray's head.
            """
            for i in range(XA_CHUNK):
                node = Object(prog, "struct xa_node *", address - XA_SLOTS - i * XA_WORD)
                try:
                    array = node.array.value_()
                    if node.shift.value_() or array <= USER_FRAGS:
                        continue
                    sk = Object(prog, "struct sock *", array - USER_FRAGS)
                    if (sk.sk_protocol.value_() != 6
                            or sk.__sk_common.skc_family.value_() not in (2, 10)):
                        continue
                    token, child = i, node
                    for _ in range(16):  # an unsigned long index needs at most 11 levels
                        parent = child.parent
                        if not parent:
                            break
                        token += child.offset.value_() << parent.shift.value_()
                        child = parent
                    xa = sk.sk_user_frags.address_of_()
                    if child.value_() != xa.xa_head.value_() - 2:
                        continue
                    if xa_load(xa, token).value_() == value:
                        return sk.value_()
                except FaultError:
                    continue
            return None


        XA_SLOTS = offsetof(prog.type("struct xa_node"), "slots")
        XA_CHUNK = prog.type("struct xa_node").member("slots").type.length
        XA_WORD = sizeof(prog.type("void *"))
        USER_FRAGS = offsetof(prog.type("struct sock"), "sk_user_frags")
        '''
    )


def _niovs_offset(prog: Program) -> str:
    """Where a net_iov's owner keeps the pointer to its niovs."""
    if has_type(prog, "struct net_iov_area"):
        return 'NIOVS_OFFSET = offsetof(prog.type("struct net_iov_area"), "niovs")'
    if has_type(prog, "struct dmabuf_genpool_chunk_owner"):
        # Before Linux v6.15 a net_iov's owner is its devmem chunk owner.
        return 'NIOVS_OFFSET = offsetof(prog.type("struct dmabuf_genpool_chunk_owner"), "niovs")'
    return "NIOVS_OFFSET = None  # no struct net_iov before Linux 6.12"


def holders_code(
    prog: Program, netmem: Sequence[str], table: Optional[Table] = None, **_: object
) -> str:
    """drgn code for ``holders NETMEM...``."""
    values = netmem_arguments(netmem)
    s = Snippet(
        prog,
        "netmem-probe holders " + " ".join(hex(v) for v in values) + sort_option(table),
        "who references each page or net_iov",
    )
    # --sort orders each value's references.
    sort = define_sort_key(s, table, HOLDER_KEYS)
    _define_holders(s)
    s.main(
        """
        # The simpler classification: netmem-probe also names slab objects and
        # their referrers, and the processes owning a socket with the ss -K
        # command that releases it.
        targets = [target(value) for value in [$values]]
        found = find_holders(targets)
        $sort
        for t in targets:
            print(json.dumps({
                "netmem": hex(t["netmem"]), "kind": t["kind"],
                "page" if t["kind"] == "page" else "net-iov": hex(t["address"]),
                "pool-id": t["pool-id"], "holders": found[t["netmem"]],
            }))
        report_problems()
        """,
        values=", ".join(hex(v) for v in values),
        sort="""
        for references in found.values():
            references.sort(key=sort_key)  # --sort
        """
        if sort
        else "",
    )
    return s.get()


def leaks_code(
    prog: Program, pool_ids: Sequence[int] = (), table: Optional[Table] = None, **_: object
) -> str:
    """drgn code for ``leaks``: each in-flight page or net_iov of detached pools, judged."""
    s = Snippet(
        prog,
        "netmem-probe leaks" + "".join(f" --pool {i}" for i in pool_ids) + sort_option(table),
        "the in-flight pages and net_iovs of detached pools, parked, cached or leaked",
    )
    # --sort orders the verdicts of each pool.
    sort = define_sort_key(s, table, KEYS["leaks"])
    define_pool_record(s)
    define_provider(s)
    _define_pool_pages(s)
    _define_holders(s)
    niovs = ""
    if has_type(prog, "struct net_iov"):
        define_areas(s, scan_files=False)
        define_niov_states(s)
        niovs = """
            # A memory provider's pool hands out net_iovs: those of its areas that
            # are this pool's and not back with the provider.
            for pool, row in pools.values():
                if not provider(pool):
                    continue
                for area in areas():
                    if row["id"] not in area["pools"]:
                        continue
                    for span, i, niov, state in niov_states(area):
                        if desc(niov).pp == pool and state != "free":
                            # user_refs: io_uring's only (a devmem niov has none).
                            user_refs = span["user_refs"][i] if span["user_refs"] else None
                            items.append((pool.value_(), target(niov.value_() | 1), {
                                "net-iov": hex(niov.value_()), "pfn": None,
                                "pp-ref-count": desc(niov).pp_ref_count.counter.value_(),
                                "user-refs": user_refs}))
            """
    selection = 'row["detached"] and row["inflight"]'
    if pool_ids:
        selection += f' and row["id"] in ({", ".join(str(i) for i in pool_ids)},)'
    s.main(
        """
        SKB_KINDS = ("skb-frag", "skb-head")
        POOL_KINDS = ("pool-cache", "pool-ring", "pool-frag-page")

        listed = listed_pools()
        pools = {}  # the detached pools with pages in flight, by address
        for pool in for_each_pool():
            row = pool_record(pool, listed)
            if $selection:
                pools[pool.value_()] = (pool, row)
        items = []  # (pool address, target, row fields)
        page_pools = {address for address, (pool, _) in pools.items() if not provider(pool)}
        for pfn, page in pool_pages(page_pools):
            items.append((page.pp.value_(), page_target(page), {
                "page": hex(page.value_()), "pfn": pfn,
                "pp-ref-count": page.pp_ref_count.counter.value_(), "user-refs": None}))
        $niovs
        found = find_holders([t for _, t, _ in items])
        for address, (pool, row) in sorted(pools.items(), key=lambda item: item[1][1]["id"]):
            verdicts = []
            for _, t, fields in (item for item in items if item[0] == address):
                holders = found[t["netmem"]]
                # parked: an skb (on a socket queue, maybe forever), a driver's rx
                # ring, a variable (static data) or user space (io_uring user_refs,
                # a devmem TCP token) holds it; cached: the pool's own cache or
                # ring, which its release work empties; leaked: nothing that holds
                # it was found.
                if (any(h["kind"] in ("rx-ring", "static-data", "devmem-token")
                        or h["kind"] in SKB_KINDS and h["skb"] for h in holders)
                        or fields["user-refs"]):
                    verdict = "parked"
                elif any(h["kind"] in POOL_KINDS for h in holders):
                    verdict = "cached"
                else:
                    verdict = "leaked"
                verdicts.append({"pool-id": row["id"], "netmem": hex(t["netmem"]),
                                 "kind": t["kind"], **fields, "verdict": verdict})
            $sort
            for verdict in verdicts:
                print(json.dumps(verdict))
        report_problems()
        """,
        selection=selection,
        niovs=niovs,
        sort="verdicts.sort(key=sort_key)  # --sort" if sort else "",
    )
    return s.get()

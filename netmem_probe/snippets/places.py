"""
drgn code for where ``holders`` finds an skb or a posted buffer outside a
socket: the per-CPU queues, the qdiscs and the drivers' rx rings.

The same walks as :mod:`netmem_probe.kernel.softnet`,
:mod:`netmem_probe.kernel.qdisc` and :mod:`netmem_probe.kernel.drivers`,
written with drgn Objects: simpler and slower, and a corrupt list or ring
is cut short rather than reported.
"""

import textwrap

from netmem_probe.snippets import Snippet, fill, has_member, has_object, has_type

__all__ = ("define_rx_rings", "define_skb_places")


def _define_chain(s: Snippet) -> None:
    s.define(
        "chain",
        '''
        # skbs followed along one queue (backlogs, defer lists and qdiscs hold far fewer).
        MAX_QUEUE_SKBS = 1 << 16


        def chain(first, link):
            """The addresses along a NULL-ended chain from address first, each
            node's next pointer link bytes into it; cut short at a loop or a fault."""
            nodes, seen = [], set()
            while first and first not in seen and len(nodes) < MAX_QUEUE_SKBS:
                seen.add(first)
                nodes.append(first)
                try:
                    first = prog.read_word(first + link)
                except FaultError:
                    break
            return nodes


        def skb_queue(head):
            """The skbs of a struct sk_buff_head ring (head is an Object)."""
            nodes = chain(head.next.value_(), offsetof(prog.type("struct sk_buff"), "next"))
            return nodes[:nodes.index(head.address_)] if head.address_ in nodes else nodes
        ''',
        [("drgn", "FaultError"), ("drgn", "offsetof")],
    )


def _softnet_code(s: Snippet) -> str:
    """The per-CPU part of ``skb_places()`` this kernel's types call for."""
    prog = s.prog
    parts = []
    if has_object(prog, "softnet_data"):
        for member in ("input_pkt_queue", "process_queue"):
            if has_member(prog, "struct softnet_data", member):
                parts.append(f'add(skb_queue(sd.{member}), "backlog")')
        if has_member(prog, "struct softnet_data", "completion_queue"):
            parts.append('add(chain(sd.completion_queue.value_(), NEXT), "completion-queue")')
        if has_member(prog, "struct softnet_data", "defer_list"):
            parts.append('add(defer_list(sd.defer_list), "defer-list")')
    if has_member(prog, "struct napi_alloc_cache", "skb_cache") and has_object(
        prog, "napi_alloc_cache"
    ):
        parts.append(
            """
            # Released sk_buffs kept for reuse (skb_cache[0:skb_count]): they hold nothing.
            nc = per_cpu(prog["napi_alloc_cache"], cpu)
            if nc.skb_count <= len(nc.skb_cache):
                add([nc.skb_cache[i].value_() for i in range(nc.skb_count)], "napi-cache")
            """
        )
    if parts and has_object(prog, "softnet_data"):
        parts.insert(0, 'sd = per_cpu(prog["softnet_data"], cpu)')
    return "\n".join(textwrap.dedent(part).strip("\n") for part in parts) or "pass"


def _defer_code(s: Snippet) -> str:
    """``defer_list(head)`` for this kernel's defer lists."""
    prog = s.prog
    llist = False
    for name in ("struct skb_defer_node", "struct softnet_data"):
        if has_member(prog, name, "defer_list"):
            llist = prog.type(name).member("defer_list").type.unaliased().type_name() == (
                "struct llist_head"
            )
            break
    if llist and has_member(prog, "struct sk_buff", "ll_node"):
        return '''
            def defer_list(head):
                """The skbs of an skb defer list: a struct llist_head through
                skb->ll_node since Linux kernel commit 844c9db7f7f5 ("net: use llist
                for sd->defer_list") (in v6.18)."""
                at = offsetof(prog.type("struct sk_buff"), "ll_node")
                return [node - at for node in chain(head.first.value_(), 0)]
            '''
    return '''
        def defer_list(head):
            """The skbs of an skb defer list: a struct sk_buff * chained through
            skb->next (Linux kernel commit 68822bdf76f1 ("net: generalize skb
            freeing deferral to per-cpu lists") (in v5.19), until v6.18)."""
            return chain(head.value_(), NEXT)
        '''


def _defer_nodes_code(s: Snippet) -> str:
    prog = s.prog
    if not (
        has_member(prog, "struct net_hotdata", "skb_defer_nodes")
        and has_object(prog, "net_hotdata")
    ):
        return ""
    return """
        # Since Linux kernel commit 5628f3fe3b16 ("net: add NUMA awareness to
        # skb_attempt_defer_free()") (in v6.18): a defer list per CPU and NUMA node.
        nodes = prog["net_hotdata"].skb_defer_nodes
        try:
            nr_nodes = prog["nr_node_ids"].value_()
        except KeyError:
            nr_nodes = 1  # a kernel built without NUMA
        if nodes:
            for cpu in for_each_possible_cpu(prog):
                for node in range(nr_nodes):
                    add(defer_list(per_cpu_ptr(nodes, cpu)[node].defer_list), "defer-list")
        """


def _qdisc_code(s: Snippet) -> str:
    """The qdisc part of ``skb_places()``."""
    prog = s.prog
    if not (
        has_type(prog, "struct Qdisc")
        and all(has_member(prog, "struct net_device", m) for m in ("qdisc", "_tx", "num_tx_queues"))
    ):
        return ""
    queues = []
    for member in ("gso_skb", "skb_bad_txq"):
        if has_member(prog, "struct Qdisc", member):
            queues.append(f'add(skb_queue(q.{member}), "qdisc")')
    if has_member(prog, "struct Qdisc", "q.head"):
        queues.append('add(chain(q.q.head.value_(), NEXT), "qdisc")  # the fifo qdiscs\' queue')
    if has_member(prog, "struct Qdisc", "defer_list") and has_member(
        prog, "struct sk_buff", "ll_node"
    ):
        queues.append(
            '# Since Linux kernel commit 100dfa74cad9 ("net: dev_queue_xmit() llist\n'
            '# adoption") (in v6.19): skbs waiting to be enqueued, through skb->ll_node.\n'
            'at = offsetof(prog.type("struct sk_buff"), "ll_node")\n'
            'add([n - at for n in chain(q.defer_list.first.value_(), 0)], "qdisc")'
        )
    if has_member(prog, "struct Qdisc", "privdata"):
        queues.append('add(private_queues(q), "qdisc")')
    hashed = ""
    if has_member(prog, "struct net_device", "qdisc_hash"):
        hashed = """
            # every qdisc with a handle (the children of classful qdiscs)
            for bucket in dev.qdisc_hash:
                qdiscs.extend(hlist_for_each_entry("struct Qdisc", bucket.address_of_(), "hash"))
            """
    return fill(
        """
        # The qdiscs of every netdev: the root, each tx queue's, and the hashed ones.
        for net in for_each_net(prog):
            for dev in for_each_netdev(net):
                qdiscs = [dev.qdisc]
                if dev._tx:
                    ntx = min(dev.num_tx_queues.value_(), 1 << 12)
                    qdiscs.extend(dev._tx[i].qdisc_sleeping for i in range(ntx))
                $hashed
                seen = set()
                for q in qdiscs:
                    if not q or q.value_() in seen:
                        continue
                    seen.add(q.value_())
                    $queues
        """,
        hashed=hashed,
        queues="\n".join(queues),
    )


def _define_private_queues(s: Snippet) -> None:
    s.define(
        "private_queues",
        '''
        def private_queues(q):
            """The skbs in the private data (qdisc_priv()) of a pfifo_fast or
            fq_codel qdisc: pfifo_fast's three bands, each a ptr_ring; fq_codel's
            flows[0:flows_cnt], each a chain from head through skb->next."""
            skbs = []
            kind = q.ops.id.string_().decode(errors="replace") if q.ops else ""
            priv = q.privdata.address_
            try:
                if kind == "pfifo_fast":
                    data = Object(prog, "struct pfifo_fast_priv", address=priv)
                    for band in data.q:
                        ring = band.ring
                        if ring.size > MAX_QUEUE_SKBS:
                            continue  # corrupt
                        skbs += [ring.queue[i].value_() for i in ring_slots(ring)]
                elif kind == "fq_codel":
                    data = Object(prog, "struct fq_codel_sched_data", address=priv)
                    if data.flows and data.flows_cnt <= 1 << 16:
                        for i in range(data.flows_cnt):
                            skbs += chain(data.flows[i].head.value_(), NEXT)
            except (FaultError, LookupError):
                pass  # unreadable, or no types for this qdisc
            return [skb for skb in skbs if skb]
        ''',
        [("drgn", "FaultError"), ("drgn", "Object")],
    )


def define_skb_places(s: Snippet) -> None:
    """``skb_places()``: skb address -> the queue outside sockets it waits on."""
    from netmem_probe.snippets.pools import define_ring_slots

    _define_chain(s)
    define_ring_slots(s)
    qdiscs = _qdisc_code(s)
    if qdiscs and has_member(s.prog, "struct Qdisc", "privdata"):
        _define_private_queues(s)
    s.define("defer_list", _defer_code(s))
    s.define(
        "skb_places",
        '''
        NEXT = offsetof(prog.type("struct sk_buff"), "next")


        def skb_places():
            """
            skb address -> where it waits outside a socket: "backlog" (a CPU's
            input_pkt_queue or process_queue), "completion-queue", "defer-list",
            "qdisc", or "napi-cache" (released, holding nothing).
            """
            places = {}

            def add(skbs, queue):
                for skb in skbs:
                    places.setdefault(skb, queue)

            for cpu in for_each_possible_cpu(prog):
                $softnet
            $defer_nodes
            $qdiscs
            return places
        ''',
        [
            ("drgn", "offsetof"),
            ("drgn.helpers.linux.cpumask", "for_each_possible_cpu"),
            ("drgn.helpers.linux.list", "hlist_for_each_entry"),
            ("drgn.helpers.linux.net", "for_each_net"),
            ("drgn.helpers.linux.net", "for_each_netdev"),
            ("drgn.helpers.linux.percpu", "per_cpu"),
            ("drgn.helpers.linux.percpu", "per_cpu_ptr"),
        ],
        softnet=_softnet_code(s),
        defer_nodes=_defer_nodes_code(s),
        qdiscs=qdiscs,
    )


def define_rx_rings(s: Snippet) -> None:
    """
    ``rx_rings()``: the drivers' posted receive buffers, ``(slots, skbs)``:
    the address of each slot's word, and each ``struct sk_buff *`` a ring
    holds (veth's xdp_ring), -> ``(driver, netdev, rx queue, slot)``.
    """
    from netmem_probe.snippets.pools import define_ring_slots

    define_ring_slots(s)
    s.define(
        "rx_rings",
        '''
        def has_member(type_name, member):
            """Whether the kernel (or a loaded module) has type_name with member: the
            drivers' types come from their modules' debug info, loaded or not."""
            try:
                offsetof(prog.type(type_name), member)
                return True
            except LookupError:
                return False


        def virtio_net_slots(dev):
            """(queue, slot, word) of each posted buffer: desc_state[id].data of the
            vring_virtqueue around each receive queue's vq (NULL when free)."""
            vi = cast("struct virtnet_info *", netdev_priv(dev))
            for q in range(vi.max_queue_pairs.value_()):
                vvq = container_of(vi.rq[q].vq, "struct vring_virtqueue", "vq")
                if has_member("struct vring_virtqueue", "packed_ring"):
                    packed = bool(vvq.packed_ring)  # v5.0 .. 7.x
                else:
                    # enum vq_layout since Linux kernel commit 1208473f9b5e
                    # ("virtio_ring: introduce virtqueue ops"): SPLIT, PACKED,
                    # SPLIT_IN_ORDER, PACKED_IN_ORDER
                    packed = "PACKED" in vvq.layout.format_()
                ring = vvq.packed if packed else vvq.split
                for i in range(min(ring.vring.num.value_(), 1 << 16)):
                    if ring.desc_state[i].data:
                        yield q, i, ring.desc_state[i].data


        def veth_slots(dev):
            """The live entries of each rx queue's xdp_ring: frames (bit 0 set) and
            sk_buffs waiting for the queue's NAPI poll."""
            priv = cast("struct veth_priv *", netdev_priv(dev))
            if not priv.rq:
                return
            for q in range(dev.real_num_rx_queues.value_()):
                ring = priv.rq[q].xdp_ring
                if ring.queue and ring.size <= 1 << 16:
                    for i in ring_slots(ring):
                        yield q, i, ring.queue[i]


        def mlx5e_slots(dev):
            """
            The pool pages each channel's rq holds until it refills the WQE (v6.4+):
            a legacy rq's frag of WQE ix holds its frag_page when its flags have
            LAST_IN_PAGE and not SKIP_RELEASE; a striding rq's WQE ix holds
            alloc_units.frag_pages[i] unless bit i of skip_release_bitmap is set.
            """
            word = "netmem" if has_member("struct mlx5e_frag_page", "netmem") else "page"
            priv = cast("struct mlx5e_priv *", netdev_priv(dev))
            if not priv.channels.c:
                return
            for c in range(priv.channels.num.value_()):
                rq = priv.channels.c[c].rq
                if rq.xsk_pool:
                    continue  # AF_XDP: user memory
                q = rq.ix.value_()
                if rq.wq_type == 1:  # MLX5_WQ_TYPE_CYCLIC
                    wqe = rq.wqe
                    log, num = wqe.info.log_num_frags.value_(), wqe.info.num_frags.value_()
                    last = 1 << prog.constant("MLX5E_WQE_FRAG_LAST_IN_PAGE").value_()
                    skip = 1 << prog.constant("MLX5E_WQE_FRAG_SKIP_RELEASE").value_()
                    for i in range((wqe.wq.fbc.sz_m1.value_() + 1) << log):
                        ix, frag = divmod(i, 1 << log)
                        info = wqe.frags[i]
                        if frag < num and info.flags & (last | skip) == last:
                            yield q, ix, getattr(info.frag_page, word)
                elif rq.wq_type == 2:  # MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ
                    mpwqe = rq.mpwqe
                    per_wqe = mpwqe.pages_per_wqe.value_()
                    info_type = prog.type("struct mlx5e_mpw_info")
                    stride = sizeof(info_type) + per_wqe * sizeof(
                        prog.type("struct mlx5e_frag_page"))
                    for ix in range(mpwqe.wq.fbc.sz_m1.value_() + 1):
                        info = Object(prog, info_type, address=mpwqe.info.value_() + ix * stride)
                        bits = info.skip_release_bitmap
                        width = 8 * sizeof(bits[0])
                        for i in range(per_wqe):
                            if not bits[i // width] >> i % width & 1:
                                yield q, ix, getattr(info.alloc_units.frag_pages[i], word)


        def bnxt_slots(dev):
            """Each rx ring's head buffers (rx_buf_ring[].data) and aggregation buffers
            (rx_agg_ring[].netmem since v6.16, .page before; ring "agg")."""
            word = "netmem" if has_member("struct bnxt_sw_rx_agg_bd", "netmem") else "page"
            bp = cast("struct bnxt *", netdev_priv(dev))
            if not bp.rx_ring:
                return
            for q in range(bp.rx_nr_rings.value_()):
                rxr = bp.rx_ring[q]
                if rxr.rx_buf_ring:
                    for i in range(bp.rx_ring_mask.value_() + 1):
                        if rxr.rx_buf_ring[i].data:
                            yield q, i, rxr.rx_buf_ring[i].data
                if rxr.rx_agg_ring:
                    for i in range(bp.rx_agg_ring_mask.value_() + 1):
                        if getattr(rxr.rx_agg_ring[i], word):
                            yield q, ("agg", i), getattr(rxr.rx_agg_ring[i], word)


        def gve_slots(dev):
            """The in-use buffer states (next == own id) of each DQO RDA ring with a
            page pool (v6.14+): page_info.netmem by buffer id."""
            if not has_member("struct gve_rx_ring", "dqo.page_pool"):
                return
            priv = cast("struct gve_priv *", netdev_priv(dev))
            if priv.queue_format != prog.constant("GVE_DQO_RDA_FORMAT") or not priv.rx:
                return
            for q in range(priv.rx_cfg.num_queues.value_()):
                dqo = priv.rx[q].dqo
                if not dqo.page_pool or not dqo.buf_states:
                    continue
                for i in range(dqo.num_buf_states.value_()):
                    state = dqo.buf_states[i]
                    if state.next == i and state.page_info.netmem:
                        yield q, i, state.page_info.netmem


        def ice_slots(dev):
            """The libeth buffers (rx_fqes, and hdr_fqes with header split) posted in
            [next_to_clean, next_to_use) of each rx ring (v6.18+)."""
            np = cast("struct ice_netdev_priv *", netdev_priv(dev))
            if np.repr or not np.vsi or not np.vsi.rx_rings:
                return  # a port representor shares its uplink's rings
            for r in range(np.vsi.num_rxq.value_()):
                ring = np.vsi.rx_rings[r]
                if not ring or ring.xsk_pool or not ring.count:
                    continue
                count, ntc, ntu = (ring.count.value_(), ring.next_to_clean.value_(),
                                   ring.next_to_use.value_())
                for fqes, pool in ((ring.rx_fqes, ring.pp), (ring.hdr_fqes, ring.hdr_pp)):
                    if fqes and pool:
                        for pos in range(ntc, ntu + (count if ntu < ntc else 0)):
                            if fqes[pos % count].netmem:
                                yield ring.q_index.value_(), pos % count, fqes[pos % count].netmem


        def idpf_slots(dev):
            """The buffers each split-queue buffer queue posted: every libeth buffer
            (buf[], and hdr_buf[] with header split) whose netmem is not 0 (the rx
            queue zeroes it as it takes the buffer back); AF_XDP queues left out."""
            vport = cast("struct idpf_netdev_priv *", netdev_priv(dev)).vport
            if not vport:
                return
            rsrc = vport.dflt_qv_rsrc
            if rsrc.rxq_model != prog.constant("VIRTCHNL2_QUEUE_MODEL_SPLIT") or not rsrc.rxq_grps:
                return
            xsk = 1 << prog.constant("__IDPF_Q_XSK").value_()
            for g in range(rsrc.num_rxq_grp.value_()):
                splitq = rsrc.rxq_grps[g].splitq
                for j in range(min(splitq.num_bufq_sets.value_(), 2) if splitq.bufq_sets else 0):
                    bufq = splitq.bufq_sets[j].bufq
                    if bufq.flags[0] & xsk:
                        continue
                    for fqes, pool, ring in ((bufq.buf, bufq.pp, f"bufq{j}" if j else None),
                                             (bufq.hdr_buf, bufq.hdr_pp,
                                              f"bufq{j} hdr" if j else "hdr")):
                        if fqes and pool:
                            for i in range(bufq.desc_count.value_()):
                                if fqes[i].netmem:
                                    yield g, (ring, i) if ring else i, fqes[i].netmem


        # Walker by driver: the bound driver of the netdev's parent device, else
        # its rtnl link kind (veth).
        RING_WALKERS = {"virtio_net": virtio_net_slots, "veth": veth_slots,
                        "mlx5_core": mlx5e_slots, "mlx5_core.sf": mlx5e_slots,
                        "bnxt_en": bnxt_slots, "gve": gve_slots, "ice": ice_slots,
                        "idpf": idpf_slots}


        def driver_of(dev):
            parent = dev.dev.parent
            if parent and parent.driver:
                return parent.driver.name.string_().decode()
            if dev.rtnl_link_ops:
                return dev.rtnl_link_ops.kind.string_().decode()
            return None


        def rx_rings():
            """
            The posted receive buffers of every netdev whose driver has a walker:
            (slots, skbs), the address of each slot's word and each sk_buff a ring
            holds (veth's), -> (driver, netdev, rx queue, slot).  A driver without
            debug info loaded (its module's) keeps its ring unknown.
            """
            slots, skbs = {}, {}
            for net in for_each_net(prog):
                for dev in for_each_netdev(net):
                    try:
                        driver = driver_of(dev)
                        if driver not in RING_WALKERS:
                            continue
                        name = dev.name.string_().decode()
                        for queue, slot, word in RING_WALKERS[driver](dev):
                            ring = None
                            if isinstance(slot, tuple):
                                ring, slot = slot
                            place = (driver, name, queue, slot, ring)
                            slots[word.address_] = place
                            if driver == "veth" and not word.value_() & 1:  # VETH_XDP_FLAG
                                skbs[word.value_()] = place
                    except (LookupError, FaultError):
                        continue  # no types for the driver, or an unreadable ring
            return slots, skbs
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "Object"),
            ("drgn", "cast"),
            ("drgn", "container_of"),
            ("drgn", "offsetof"),
            ("drgn", "sizeof"),
            ("drgn.helpers.linux.net", "for_each_net"),
            ("drgn.helpers.linux.net", "for_each_netdev"),
            ("drgn.helpers.linux.net", "netdev_priv"),
        ],
    )

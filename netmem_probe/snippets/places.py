"""
drgn code for where ``holders`` finds an skb or a posted buffer outside a
socket: the per-CPU queues, the qdiscs, NAPI's GRO lists and the drivers' rx
rings.

The same walks as :mod:`netmem_probe.kernel.softnet`,
:mod:`netmem_probe.kernel.qdisc`, :mod:`netmem_probe.kernel.queues` and
:mod:`netmem_probe.kernel.drivers`, written with drgn Objects: simpler and
slower.  A list, chain or ring that loops, does not link back or cannot be
read is reported on stderr (``problem()``) with netmem-probe's wording, and
not followed further.
"""

import textwrap
from typing import Optional, Tuple

from netmem_probe.snippets import Snippet, fill, has_member, has_object, has_type

__all__ = (
    "define_gro_lists",
    "define_problems",
    "define_rx_rings",
    "define_skb_places",
    "define_static_data",
)


def define_problems(s: Snippet) -> None:
    """
    ``problem()``/``fault()``: what a walk could not follow, and
    ``report_problems()``, which prints it on stderr as netmem-probe does.
    """
    s.add_import("sys")
    s.define(
        "problems",
        """
        # What a walk could not follow (unreadable, looping, not linking back): not
        # guessed past, reported on stderr at the end, in netmem-probe's words.
        PROBLEMS = []


        def problem(what, address, reason):
            text = f"{what} at {address:#x}: {reason}"
            if text not in PROBLEMS:
                PROBLEMS.append(text)


        def fault(what, address, error):
            problem(what, address, f"unreadable ({error.message} at {error.address:#x})")


        def report_problems():
            if PROBLEMS:
                print(f"warning: {len(PROBLEMS)} object(s) skipped (unreadable or inconsistent):",
                      file=sys.stderr)
                for text in PROBLEMS:
                    print(f"  {text}", file=sys.stderr)
        """,
    )


def _define_chain(s: Snippet) -> None:
    define_problems(s)
    s.define(
        "chain",
        '''
        # skbs followed along one queue (backlogs, defer lists and qdiscs hold far fewer).
        MAX_QUEUE_SKBS = 1 << 16
        WORD = sizeof(prog.type("void *"))


        def chain(first, link, what, address):
            """
            The addresses along a NULL-ended chain from address first, each node's
            next pointer link bytes into it.  A loop, an unreadable node or more than
            MAX_QUEUE_SKBS nodes ends the walk and is reported as what at address.
            """
            nodes, seen, node = [], set(), first
            while node:
                if node in seen:
                    problem(what, address, f"chain loops at {node:#x}")
                    break
                if len(nodes) >= MAX_QUEUE_SKBS:
                    problem(what, address, f"more than {MAX_QUEUE_SKBS} skbs (corrupt?)")
                    break
                seen.add(node)
                nodes.append(node)
                try:
                    node = prog.read_word((node + link) % (1 << 64))
                except FaultError as e:
                    fault(what, node, e)
                    break
            return nodes


        def chain_at(at, link, what):
            """The chain whose first node the word at address at points to."""
            try:
                return chain(prog.read_word(at), link, what, at)
            except FaultError as e:
                fault(what, at, e)
                return []


        def list_nodes(head, what, limit=MAX_QUEUE_SKBS):
            """
            The nodes of the list at address head whose nodes start with next and
            prev (a struct list_head, or sk_buffs on a struct sk_buff_head), each
            node's prev checked.  A node that does not link back or cannot be read
            is reported and the nodes after it come from a walk back from the head
            through prev; a loop or more than limit nodes is reported and ends it.
            """
            nodes, seen, prev = [], {head}, head
            try:
                node = prog.read_word(head)
            except FaultError as e:
                problem(what, head, f"unreadable head ({e.message})")
                return nodes
            for _ in range(limit):
                if node == head:
                    return nodes
                if node in seen:
                    problem(what, head, f"cycle at node {node:#x}")
                    return nodes
                seen.add(node)
                try:
                    after, back = prog.read_word(node), prog.read_word(node + WORD)
                except FaultError as e:
                    problem(what, node, f"unreadable node ({e.message})")
                    break
                if back != prev:
                    problem(what, node, f"node's prev is {back:#x}, expected {prev:#x}")
                    break
                nodes.append(node)
                prev, node = node, after
            else:
                problem(what, head, f"more than {limit} nodes")
                return nodes
            # Back from the head along prev, each node's next checked, up to the break.
            tail, later, known = [], head, set(nodes)
            try:
                node = prog.read_word(head + WORD)
                for _ in range(limit - len(nodes)):
                    if node == head or node in known:
                        break
                    known.add(node)
                    after, back = prog.read_word(node), prog.read_word(node + WORD)
                    if after != later:
                        break
                    tail.append(node)
                    later, node = node, back
            except FaultError:
                pass
            return nodes + tail[::-1]


        def hlist_nodes(head, what, limit=1 << 20):
            """
            The nodes of the struct hlist_head at address head, each node's pprev
            checked against the pointer that led to it; a node that does not link
            back, cannot be read or loops, or more than limit nodes, is reported
            and ends the walk.
            """
            nodes, seen, link = [], set(), head
            try:
                node = prog.read_word(head)
            except FaultError as e:
                problem(what, head, f"unreadable head ({e.message})")
                return nodes
            for _ in range(limit):
                if not node:
                    return nodes
                if node in seen:
                    problem(what, head, f"cycle at node {node:#x}")
                    return nodes
                seen.add(node)
                try:
                    after, pprev = prog.read_word(node), prog.read_word(node + WORD)
                except FaultError as e:
                    problem(what, node, f"unreadable node ({e.message})")
                    return nodes
                if pprev != link:
                    problem(what, node, f"node's pprev is {pprev:#x}, expected {link:#x}")
                    return nodes
                nodes.append(node)
                link, node = node, after
            problem(what, head, f"more than {limit} nodes")
            return nodes


        def netdevs():
            """
            Every struct net_device * on the dev_base_head list of every namespace
            on net_namespace_list: drgn's for_each_net() and for_each_netdev(),
            with each list checked as list_nodes() checks it.
            """
            in_net = offsetof(prog.type("struct net"), "list")
            dev_base = offsetof(prog.type("struct net"), "dev_base_head")
            in_dev = offsetof(prog.type("struct net_device"), "dev_list")
            for net in list_nodes(prog["net_namespace_list"].address_, "net_namespace_list",
                                  1 << 20):
                for node in list_nodes(net - in_net + dev_base, "dev_base_head", 1 << 20):
                    yield Object(prog, "struct net_device *", node - in_dev)
        ''',
        [("drgn", "FaultError"), ("drgn", "Object"), ("drgn", "offsetof"), ("drgn", "sizeof")],
    )


def _softnet_code(s: Snippet) -> str:
    """The per-CPU part of ``skb_places()`` this kernel's types call for."""
    prog = s.prog
    parts = []
    if has_object(prog, "softnet_data"):
        for member in ("input_pkt_queue", "process_queue"):
            if has_member(prog, "struct softnet_data", member):
                parts.append(
                    f'add(list_nodes(sd.{member}.address_, f"CPU {{cpu}} backlog {member}"), '
                    '"backlog")'
                )
        if has_member(prog, "struct softnet_data", "completion_queue"):
            parts.append(
                'add(chain_at(sd.completion_queue.address_, NEXT, f"CPU {cpu} completion_queue"), '
                '"completion-queue")'
            )
        if has_member(prog, "struct softnet_data", "defer_list"):
            parts.append('add(defer_list(sd.defer_list, f"CPU {cpu}"), "defer-list")')
    if has_member(prog, "struct napi_alloc_cache", "skb_cache") and has_object(
        prog, "napi_alloc_cache"
    ):
        parts.append(
            """
            # Released sk_buffs kept for reuse (skb_cache[0:skb_count]): they hold nothing.
            nc = per_cpu(prog["napi_alloc_cache"], cpu)
            if nc.skb_count <= len(nc.skb_cache):
                add([nc.skb_cache[i].value_() for i in range(nc.skb_count)], "napi-cache")
            else:
                problem("NAPI skb cache", nc.address_,
                        f"skb_count {nc.skb_count.value_()} beyond its {len(nc.skb_cache)} slots")
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
            def defer_list(head, where):
                """The skbs of an skb defer list (head, the list's Object, on CPU where):
                a struct llist_head through skb->ll_node since Linux kernel commit
                844c9db7f7f5 ("net: use llist for sd->defer_list") (in v6.18)."""
                at = offsetof(prog.type("struct sk_buff"), "ll_node")
                return [node - at for node in
                        chain_at(head.address_, 0, f"skb defer list of {where}")]
            '''
    return '''
        def defer_list(head, where):
            """The skbs of an skb defer list (head, the list's Object, on CPU where):
            a struct sk_buff * chained through skb->next (Linux kernel commit
            68822bdf76f1 ("net: generalize skb freeing deferral to per-cpu lists")
            (in v5.19), until v6.18)."""
            return chain_at(head.address_, NEXT, f"skb defer list of {where}")
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
                try:
                    lists = per_cpu_ptr(nodes, cpu)
                except FaultError as e:  # an unreadable __per_cpu_offset[cpu]
                    fault(f"CPU {cpu} skb defer nodes", e.address, e)
                    continue
                for node in range(nr_nodes):
                    add(defer_list(lists[node].defer_list, f"CPU {cpu}, node {node}"),
                        "defer-list")
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
            queues.append(f'add(list_nodes(q.{member}.address_, "qdisc {member}"), "qdisc")')
    if has_member(prog, "struct Qdisc", "q.head"):
        queues.append(
            'add(chain_at(q.q.head.address_, NEXT, "qdisc queue"), "qdisc")  # the fifos\' queue'
        )
    if has_member(prog, "struct Qdisc", "defer_list") and has_member(
        prog, "struct sk_buff", "ll_node"
    ):
        queues.append(
            '# Since Linux kernel commit 100dfa74cad9 ("net: dev_queue_xmit() llist\n'
            '# adoption") (in v6.19): skbs waiting to be enqueued, through skb->ll_node.\n'
            'at = offsetof(prog.type("struct sk_buff"), "ll_node")\n'
            'add([n - at for n in chain_at(q.defer_list.address_, 0, "qdisc defer_list")], '
            '"qdisc")'
        )
    if has_member(prog, "struct Qdisc", "privdata"):
        queues.append('add(private_queues(q), "qdisc")')
    hashed = ""
    if has_member(prog, "struct net_device", "qdisc_hash"):
        hashed = """
            # every qdisc with a handle (the children of classful qdiscs)
            in_qdisc = offsetof(prog.type("struct Qdisc"), "hash")
            for bucket in dev.qdisc_hash:
                qdiscs.extend(Object(prog, "struct Qdisc *", node - in_qdisc)
                              for node in hlist_nodes(bucket.address_, "qdisc_hash"))
            """
    return fill(
        """
        # The qdiscs of every netdev: the root, each tx queue's, and the hashed ones.
        for dev in netdevs():
            try:
                qdiscs = [dev.qdisc]
                if dev._tx:
                    ntx = min(dev.num_tx_queues.value_(), 1 << 12)
                    qdiscs.extend(dev._tx[i].qdisc_sleeping for i in range(ntx))
                $hashed
            except FaultError as e:
                fault("netdev qdiscs", dev.value_(), e)
                continue
            seen = set()
            for q in qdiscs:
                if not q or q.value_() in seen:
                    continue
                seen.add(q.value_())
                try:
                    $queues
                except FaultError as e:
                    fault("qdisc", q.value_(), e)
        """,
        hashed=hashed,
        queues="\n".join(queues),
    )


def _define_private_queues(s: Snippet) -> None:
    s.define(
        "private_queues",
        '''
        def private_queues(q):
            """The skbs in the private data (qdisc_priv()) of a pfifo_fast,
            fq_codel or fq qdisc: pfifo_fast's three bands, each a ptr_ring; fq_codel's
            flows[0:flows_cnt], each a chain from head through skb->next; fq's
            internal flow and the flows of its fq_root trees, each a chain from
            head and an rbtree of skbs (t_root)."""
            skbs = []
            kind = q.ops.id.string_().decode(errors="replace") if q.ops else ""
            priv = q.privdata.address_
            try:
                if kind == "pfifo_fast":
                    data = Object(prog, "struct pfifo_fast_priv", address=priv)
                    for band in data.q:
                        ring = band.ring
                        try:
                            size, head = ring.size.value_(), ring.consumer_head.value_()
                            if size > MAX_QUEUE_SKBS or max(head, ring.producer) >= max(size, 1):
                                problem("pfifo_fast band", ring.address_,
                                        f"ring size {size}, consumer {head}")
                            elif ring.queue:
                                skbs += [ring.queue[i].value_() for i in ring_slots(ring)]
                        except FaultError as e:
                            fault("pfifo_fast band", ring.address_, e)
                elif kind == "fq_codel":
                    data = Object(prog, "struct fq_codel_sched_data", address=priv)
                    try:
                        flows, count = data.flows.value_(), data.flows_cnt.value_()
                    except FaultError as e:
                        fault("fq_codel", priv, e)
                        return []
                    if flows and count > 1 << 16:  # fq_codel_change() refuses more
                        problem("fq_codel", priv, f"flows_cnt {count} beyond {1 << 16}")
                    elif flows:
                        for i in range(count):
                            head = data.flows[i].head
                            try:
                                first = head.value_()
                            except FaultError as e:
                                fault("fq_codel flows", flows, e)
                                break
                            skbs += chain(first, NEXT, "fq_codel flow", head.address_)
                elif kind == "fq":
                    data = Object(prog, "struct fq_sched_data", address=priv)
                    flows = [data.internal.address_]
                    try:
                        roots, log = data.fq_root.value_(), data.fq_trees_log.value_()
                    except FaultError as e:
                        fault("fq", priv, e)
                        roots = log = 0
                    if roots and log > 18:  # fq_change() refuses more than 256K trees
                        problem("fq", priv, f"fq_trees_log {log} beyond 18")
                    elif roots:
                        at = offsetof(prog.type("struct fq_flow"), "fq_node")
                        for i in range(1 << log):
                            try:
                                top = prog.read_word(roots + i * WORD)
                            except FaultError as e:
                                fault("fq flow trees", roots, e)
                                break
                            flows += [n - at for n in rb_nodes(top, "fq flow tree")]
                    at = offsetof(prog.type("struct sk_buff"), "rbnode")
                    for flow in flows:
                        flow = Object(prog, "struct fq_flow", address=flow)
                        try:
                            first, top = flow.head.value_(), flow.t_root.rb_node.value_()
                        except FaultError as e:
                            fault("fq flow", flow.address_, e)
                            continue
                        skbs += chain(first, NEXT, "fq flow", flow.address_)
                        skbs += [n - at for n in rb_nodes(top, "fq flow rbtree")]
            except LookupError:
                pass  # no types for this qdisc
            return [skb for skb in skbs if skb]


        def rb_nodes(top, what):
            """
            The nodes of an rbtree from the address of its top node, parents first.
            A child whose parent pointer is not its parent, a loop or an unreadable
            node is reported as what and not followed; more than MAX_QUEUE_SKBS
            nodes ends the walk.
            """
            nodes, seen, pending = [], set(), [(top, 0)] if top else []
            while pending:
                node, parent = pending.pop()
                if node in seen:
                    problem(what, node, "tree loops")
                    continue
                if len(nodes) >= MAX_QUEUE_SKBS:
                    problem(what, top, f"more than {MAX_QUEUE_SKBS} nodes (corrupt?)")
                    break
                seen.add(node)
                try:
                    rb = Object(prog, "struct rb_node", address=node)
                    up = rb.__rb_parent_color.value_() & ~3
                    right, left = rb.rb_right.value_(), rb.rb_left.value_()
                except FaultError as e:
                    fault(what, node, e)
                    continue
                if up != parent:
                    problem(what, node, f"parent is {up:#x}, not {parent:#x}")
                    continue
                nodes.append(node)
                pending += [(child, node) for child in (right, left) if child]
            return nodes
        ''',
        [("drgn", "FaultError"), ("drgn", "Object"), ("drgn", "offsetof")],
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
                try:
                    $softnet
                except FaultError as e:  # an unreadable __per_cpu_offset[cpu]
                    fault(f"CPU {cpu} softnet_data", e.address, e)
            $defer_nodes
            $qdiscs
            return places
        ''',
        [
            ("drgn", "FaultError"),
            ("drgn", "offsetof"),
            ("drgn.helpers.linux.cpumask", "for_each_possible_cpu"),
            ("drgn.helpers.linux.percpu", "per_cpu"),
            ("drgn.helpers.linux.percpu", "per_cpu_ptr"),
        ],
        softnet=_softnet_code(s),
        defer_nodes=_defer_nodes_code(s),
        qdiscs=qdiscs,
    )


def _gro_paths(s: Snippet) -> Optional[Tuple[str, str]]:
    """(hash buckets, rx_list) paths in struct napi_struct, if it has GRO lists."""
    # Since Linux kernel commit 291515c76409 ("net: gro: decouple GRO from the
    # NAPI layer") (in v6.15) the GRO state is napi->gro, a struct gro_node;
    # before, napi->gro_hash[] and napi->rx_list (v4.19 .. v6.14).
    for paths in (("gro.hash", "gro.rx_list"), ("gro_hash", "rx_list")):
        if has_member(s.prog, "struct napi_struct", paths[0]):
            return paths
    return None


def define_gro_lists(s: Snippet) -> None:
    """``gro_lists()``: the skbs NAPI instances hold for merging."""
    _define_chain(s)
    paths = _gro_paths(s)
    if paths is None or not has_member(s.prog, "struct sk_buff", "list"):
        s.define(
            "gro_lists",
            '''
            def gro_lists():
                """No GRO lists in this kernel's types."""
                return set()
            ''',
        )
        return
    s.define(
        "gro_lists",
        '''
        # skbs followed along one GRO list: GRO keeps at most 8 (MAX_GRO_SKBS) per
        # bucket, so a longer list is corrupt.
        MAX_GRO_SKBS = 64


        def gro_lists():
            """
            The skbs every NAPI instance (on each netdev's napi_list) holds for
            merging: on its GRO hash buckets' lists and its rx_list, struct
            list_heads through skb->list.
            """
            skbs = set()
            in_napi = offsetof(prog.type("struct napi_struct"), "dev_list")
            in_skb = offsetof(prog.type("struct sk_buff"), "list")
            for dev in netdevs():
                for node in list_nodes(dev.napi_list.address_, "napi_list", 1 << 20):
                    napi = Object(prog, "struct napi_struct", address=node - in_napi)
                    heads = [bucket.list.address_ for bucket in napi.$buckets]
                    heads.append(napi.$rx_list.address_)
                    for head in heads:
                        skbs.update(skb - in_skb
                                    for skb in list_nodes(head, "GRO list", MAX_GRO_SKBS))
            return skbs
        ''',
        [("drgn", "Object"), ("drgn", "offsetof")],
        buckets=paths[0],
        rx_list=paths[1],
    )


def define_rx_rings(s: Snippet) -> None:
    """
    ``rx_rings()``: the drivers' posted receive buffers, ``(slots, skbs)``:
    the address of each slot's word, and each ``struct sk_buff *`` a ring
    holds (veth's xdp_ring), -> ``(driver, netdev, rx queue, slot)``.
    """
    from netmem_probe.snippets.pools import define_ring_slots

    _define_chain(s)
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


        # No driver's ring has more slots; a larger size is corrupt.
        MAX_RING_SLOTS = 1 << 16


        def ring_size(what, size):
            """size, or ValueError (reported, the netdev's walk ends) if no ring
            can be that large."""
            if not 0 <= size <= MAX_RING_SLOTS:
                raise ValueError(f"{what}: ring size {size} is impossible (corrupt?)")
            return size


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
                for i in range(ring_size(f"virtio_net rx queue {q}", ring.vring.num.value_())):
                    if ring.desc_state[i].data:
                        yield q, i, ring.desc_state[i].data


        def veth_slots(dev):
            """The live entries of each rx queue's xdp_ring: frames (bit 0 set) and
            sk_buffs waiting for the queue's NAPI poll."""
            priv = cast("struct veth_priv *", netdev_priv(dev))
            if not priv.rq:
                return
            for q in range(ring_size("veth rx queues", dev.real_num_rx_queues.value_())):
                ring = priv.rq[q].xdp_ring
                if ring_size(f"veth rx queue {q}", ring.size.value_()) and ring.queue:
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
            for c in range(ring_size("mlx5e channels", priv.channels.num.value_())):
                rq = priv.channels.c[c].rq
                if rq.xsk_pool:
                    continue  # AF_XDP: user memory
                q = rq.ix.value_()
                if rq.wq_type == 1:  # MLX5_WQ_TYPE_CYCLIC
                    wqe = rq.wqe
                    size = ring_size(f"mlx5e rx queue {q}", wqe.wq.fbc.sz_m1.value_() + 1)
                    log, num = wqe.info.log_num_frags.value_(), wqe.info.num_frags.value_()
                    if not 0 < num <= min(len(wqe.info.arr), 1 << log):
                        raise ValueError(
                            f"mlx5e rx queue {q}: {num} frags of {1 << log} (corrupt?)")
                    count = ring_size(f"mlx5e rx queue {q} frags", size << log)
                    last = 1 << prog.constant("MLX5E_WQE_FRAG_LAST_IN_PAGE").value_()
                    skip = 1 << prog.constant("MLX5E_WQE_FRAG_SKIP_RELEASE").value_()
                    units = wqe.alloc_units.value_()
                    for i in range(count):
                        ix, frag = divmod(i, 1 << log)
                        info = wqe.frags[i]
                        if frag < num and info.flags & (last | skip) == last:
                            # frag_page points into the rq's alloc_units
                            unit, misplaced = divmod(info.frag_page.value_() - units,
                                                     sizeof(info.frag_page[0]))
                            if misplaced or not 0 <= unit < count:
                                raise ValueError(
                                    f"mlx5e rx queue {q} slot {ix}: frag_page "
                                    f"{info.frag_page.value_():#x} is not one of its "
                                    "alloc_units (corrupt?)")
                            yield q, ix, getattr(info.frag_page, word)
                elif rq.wq_type == 2:  # MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ
                    mpwqe = rq.mpwqe
                    size = ring_size(f"mlx5e rx queue {q}", mpwqe.wq.fbc.sz_m1.value_() + 1)
                    per_wqe = mpwqe.pages_per_wqe.value_()
                    info_type = prog.type("struct mlx5e_mpw_info")
                    if not 0 < per_wqe <= 8 * sizeof(info_type.member("skip_release_bitmap").type):
                        raise ValueError(f"mlx5e rx queue {q}: {per_wqe} pages per WQE (corrupt?)")
                    stride = sizeof(info_type) + per_wqe * sizeof(
                        prog.type("struct mlx5e_frag_page"))
                    for ix in range(size):
                        info = Object(prog, info_type, address=mpwqe.info.value_() + ix * stride)
                        bits = info.skip_release_bitmap
                        width = 8 * sizeof(bits[0])
                        for i in range(per_wqe):
                            if not bits[i // width] >> i % width & 1:
                                yield q, ix, getattr(info.alloc_units.frag_pages[i], word)
                else:
                    raise ValueError(
                        f"mlx5e rx queue {q}: unknown wq_type {rq.wq_type.value_()} (corrupt?)")


        def bnxt_slots(dev):
            """Each rx ring's head buffers (rx_buf_ring[].data) and aggregation buffers
            (rx_agg_ring[].netmem since v6.16, .page before; ring "agg")."""
            word = "netmem" if has_member("struct bnxt_sw_rx_agg_bd", "netmem") else "page"
            bp = cast("struct bnxt *", netdev_priv(dev))
            if not bp.rx_ring:
                return
            rings = ring_size("bnxt rx rings", bp.rx_nr_rings.value_())
            heads = ring_size("bnxt rx ring", bp.rx_ring_mask.value_() + 1)
            aggs = ring_size("bnxt rx agg ring", bp.rx_agg_ring_mask.value_() + 1)
            for q in range(rings):
                rxr = bp.rx_ring[q]
                if rxr.rx_buf_ring:
                    for i in range(heads):
                        if rxr.rx_buf_ring[i].data:
                            yield q, i, rxr.rx_buf_ring[i].data
                if rxr.rx_agg_ring:
                    for i in range(aggs):
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
            for q in range(ring_size("gve rx queues", priv.rx_cfg.num_queues.value_())):
                dqo = priv.rx[q].dqo
                if not dqo.page_pool or not dqo.buf_states:
                    continue
                for i in range(ring_size(f"gve rx queue {q}", dqo.num_buf_states.value_())):
                    state = dqo.buf_states[i]
                    if state.next == i and state.page_info.netmem:
                        yield q, i, state.page_info.netmem


        def ice_slots(dev):
            """The libeth buffers (rx_fqes, and hdr_fqes with header split) posted in
            [next_to_clean, next_to_use) of each rx ring (v6.18+)."""
            np = cast("struct ice_netdev_priv *", netdev_priv(dev))
            if np.repr or not np.vsi or not np.vsi.rx_rings:
                return  # a port representor shares its uplink's rings
            for r in range(ring_size("ice rx rings", np.vsi.num_rxq.value_())):
                ring = np.vsi.rx_rings[r]
                if not ring or ring.xsk_pool:
                    continue
                q = ring.q_index.value_()
                count = ring_size(f"ice rx queue {q}", ring.count.value_())
                ntc, ntu = ring.next_to_clean.value_(), ring.next_to_use.value_()
                if not count:
                    continue
                if not (0 <= ntc < count and 0 <= ntu < count):
                    raise ValueError(f"ice rx queue {q}: indices {ntc}, {ntu} outside a ring "
                                     f"of {count} (corrupt?)")
                for fqes, pool in ((ring.rx_fqes, ring.pp), (ring.hdr_fqes, ring.hdr_pp)):
                    if fqes and pool:
                        for pos in range(ntc, ntu + (count if ntu < ntc else 0)):
                            if fqes[pos % count].netmem:
                                yield q, pos % count, fqes[pos % count].netmem


        def idpf_slots(dev):
            """The buffers each split-queue buffer queue posted: every libeth buffer
            (buf[], and hdr_buf[] with header split) whose netmem is not 0 (the rx
            queue zeroes it as it takes the buffer back); in the single queue model
            each rx queue's own rx_buf[]; AF_XDP queues left out.  And each rx
            queue's stash (v6.18+): the head buffer its xdp.data points into
            ("stash") and, with XDP_FLAGS_HAS_FRAGS, the frags in that buffer's
            shared info ("stash frag")."""
            vport = cast("struct idpf_netdev_priv *", netdev_priv(dev)).vport
            if not vport:
                return
            rsrc = vport.dflt_qv_rsrc
            if not rsrc.rxq_grps:
                return
            split = rsrc.rxq_model == prog.constant("VIRTCHNL2_QUEUE_MODEL_SPLIT")
            xsk = 1 << prog.constant("__IDPF_Q_XSK").value_()
            for g in range(ring_size("idpf rx queue groups", rsrc.num_rxq_grp.value_())):
                grp = rsrc.rxq_grps[g]
                if split:
                    splitq = grp.splitq
                    bufqs = splitq.num_bufq_sets.value_()
                    if bufqs > 2:  # IDPF_MAX_BUFQS_PER_RXQ_GRP
                        raise ValueError(
                            f"idpf rx queue group {g}: {bufqs} buffer queues (corrupt?)")
                    for j in range(bufqs if splitq.bufq_sets else 0):
                        bufq = splitq.bufq_sets[j].bufq
                        if bufq.flags[0] & xsk:
                            continue
                        count = ring_size(f"idpf rx queue {g} bufq {j}", bufq.desc_count.value_())
                        for fqes, pool, ring in ((bufq.buf, bufq.pp, f"bufq{j}" if j else None),
                                                 (bufq.hdr_buf, bufq.hdr_pp,
                                                  f"bufq{j} hdr" if j else "hdr")):
                            if fqes and pool:
                                for i in range(count):
                                    if fqes[i].netmem:
                                        yield g, (ring, i) if ring else i, fqes[i].netmem
                    queues, count = splitq.rxq_sets, splitq.num_rxq_sets.value_()
                else:
                    queues, count = grp.singleq.rxqs, grp.singleq.num_rxq.value_()
                if count > len(queues):
                    raise ValueError(f"idpf rx queue group {g}: {count} rx queues (corrupt?)")
                for j in range(count):
                    if not queues[j]:
                        continue
                    rxq = queues[j].rxq if split else queues[j]
                    if rxq.flags[0] & xsk:
                        continue
                    q = rxq.idx.value_()
                    if not split and rxq.rx_buf and rxq.pp:
                        for i in range(ring_size(f"idpf rx queue {q}", rxq.desc_count.value_())):
                            if rxq.rx_buf[i].netmem:
                                yield q, i, rxq.rx_buf[i].netmem
                    if not has_member("struct idpf_rx_queue", "xdp") or not rxq.xdp.data:
                        continue
                    stash = rxq.xdp
                    yield q, ("stash", 0), stash.data
                    if stash.flags & prog.constant("XDP_FLAGS_HAS_FRAGS"):
                        # the shared info at the frame's end, SKB_DATA_ALIGN()ed (64)
                        size = -(-sizeof(prog.type("struct skb_shared_info")) // 64) * 64
                        start = stash.data.value_() - stash.headroom.value_()
                        end = start + stash.frame_sz.value_()
                        if end - size < start:
                            raise ValueError(
                                f"idpf rx queue {q} stash: a {end - start}-byte frame cannot "
                                "hold its shared info (corrupt?)")
                        shinfo = Object(prog, "struct skb_shared_info", address=end - size)
                        if shinfo.nr_frags > len(shinfo.frags):
                            raise ValueError(f"idpf rx queue {q} stash: "
                                             f"{shinfo.nr_frags.value_()} frags (corrupt?)")
                        for i in range(shinfo.nr_frags.value_()):
                            yield q, ("stash frag", i), shinfo.frags[i].netmem


        def fbnic_slots(dev):
            """The pages each rx queue's header (hpq) and payload (ppq) page queues
            hold: the entries of rx_buf[] that name one (netmem since v6.18, page
            before); queue q's completion ring fbn->rx[q] is the cmpl of their triad."""
            word = "netmem" if has_member("struct fbnic_rx_buf", "netmem") else "page"
            fbn = cast("struct fbnic_net *", netdev_priv(dev))
            for q in range(len(fbn.rx)):
                if not fbn.rx[q]:
                    continue
                qt = container_of(fbn.rx[q], "struct fbnic_q_triad", "cmpl")
                if qt.cmpl.q_idx != q:
                    raise ValueError(f"fbnic rx queue {q}: its completion ring is queue "
                                     f"{qt.cmpl.q_idx.value_()} (corrupt?)")
                for bdq, ring in ((qt.sub0, "hpq"), (qt.sub1, "ppq")):
                    if bdq.rx_buf:
                        # sized in powers of two: size_mask masks the indexes
                        what = f"fbnic rx queue {q} {ring}"
                        size = ring_size(what, bdq.size_mask.value_() + 1)
                        if size & (size - 1):
                            raise ValueError(f"{what}: ring size {size} is impossible (corrupt?)")
                        for i in range(size):
                            if getattr(bdq.rx_buf[i], word):
                                yield q, (ring, i), getattr(bdq.rx_buf[i], word)


        # Walker by driver: the bound driver of the netdev's parent device, else
        # its rtnl link kind (veth).
        RING_WALKERS = {"virtio_net": virtio_net_slots, "veth": veth_slots,
                        "mlx5_core": mlx5e_slots, "mlx5_core.sf": mlx5e_slots,
                        "bnxt_en": bnxt_slots, "gve": gve_slots, "ice": ice_slots,
                        "idpf": idpf_slots, "fbnic": fbnic_slots}


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
            for dev in netdevs():
                name = None
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
                except LookupError:
                    continue  # no types for the driver: its ring stays unknown
                except FaultError as e:  # the slots before the fault are kept
                    if name is not None:  # (an unreadable netdev is left out)
                        fault(f"{driver} {name} rx ring", e.address, e)
                except ValueError as e:  # a ring whose bounds make no sense
                    problem(f"{driver} {name} rx ring", dev.value_(), str(e))
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


def define_static_data(s: Snippet) -> None:
    """
    ``place_kind(address)``: ``static-data`` for a direct-map word in the
    kernel image's static data or a loaded module's memory (as
    :class:`netmem_probe.kernel.statics.StaticData` maps them), else
    ``unknown``; ``STATIC_DATA = static_data()`` must be set first.
    """
    s.define(
        "static_data",
        '''
        # x86-64's __START_KERNEL_map: the kernel image's virtual base, at phys_base.
        X86_64_KERNEL_MAP = 0xFFFFFFFF80000000
        # Far beyond any real kernel's few hundred modules: past it the list is corrupt.
        MAX_MODULES = 1 << 14


        def static_data():
            """
            The [lo, hi) direct-map ranges of the kernel image's static data
            (.data, .bss, read-only after init) and of the loaded modules' memory:
            the RAM search, physical, finds a variable's words there.
            """
            numbers = dict(line[len("NUMBER("):].split(")=", 1)
                           for line in prog["VMCOREINFO"].string_().decode().splitlines()
                           if line.startswith("NUMBER(") and ")=" in line)
            offset = None  # the kernel image's virtual minus physical address
            if prog.platform.arch == Architecture.X86_64 and "phys_base" in numbers:
                offset = X86_64_KERNEL_MAP - int(numbers["phys_base"], 0)
            elif prog.platform.arch == Architecture.AARCH64 and "kimage_voffset" in numbers:
                offset = int(numbers["kimage_voffset"], 16)
            ranges = []
            for first, last in (("_sdata", "_edata"), ("__bss_start", "__bss_stop"),
                                ("__start_ro_after_init", "__end_ro_after_init")):
                try:
                    lo, hi = prog.symbol(first).address, prog.symbol(last).address
                except LookupError:
                    continue
                if offset is not None:
                    ranges.append((DIRECT_MAP + lo - offset, DIRECT_MAP + hi - offset))
            try:
                init_mm = prog["init_mm"].address_of_()
                for _, mod in zip(range(MAX_MODULES), for_each_module(prog)):
                    mod = mod[0]
                    # mem[] since Linux kernel commit ac3b43283923 ("module: replace
                    # module_layout with module_memory") (in v6.4)
                    regions = (mod.mem if mod.type_.has_member("mem")
                               else (mod.core_layout, mod.init_layout))
                    for region in regions:
                        start, size = region.base.value_(), region.size.value_()
                        for vaddr in range(start, start + size, 1 << PAGE_SHIFT):
                            try:
                                phys = DIRECT_MAP + follow_phys(init_mm, vaddr).value_()
                            except FaultError:
                                continue  # not mapped
                            end = min(vaddr + (1 << PAGE_SHIFT), start + size)
                            ranges.append((phys, phys + end - vaddr))
            except (LookupError, FaultError):
                pass  # no module support, or an unreadable module list
            return ranges


        def place_kind(address):
            """A word no walker names: "static-data" in a variable, else "unknown"."""
            static = any(lo <= address < hi for lo, hi in STATIC_DATA)
            return "static-data" if static else "unknown"
        ''',
        [
            ("drgn", "Architecture"),
            ("drgn", "FaultError"),
            ("drgn.helpers.linux.mm", "follow_phys"),
            ("drgn.helpers.linux.module", "for_each_module"),
        ],
    )

"""
Fake driver rx rings: the private structures of a virtio_net, veth, mlx5e, ice,
idpf, bnxt, gve or fbnic netdev that :mod:`netmem_probe.kernel.drivers` walks,
with the layouts of the fixture's kernel (the linux-7.3 layout has them, from
Debian's DWARF; linux-6.12 has fbnic's of that era).
"""

from typing import TYPE_CHECKING, Dict, List, Tuple

import drgn

from netmem_probe.fake.net import NetDevice

if TYPE_CHECKING:
    from netmem_probe.fake.net import NetNamespace
    from netmem_probe.fake.pools import FakePage, FakePagePool
    from netmem_probe.fake.world import KObject

__all__ = (
    "FakeBnxt",
    "FakeFbnic",
    "FakeGve",
    "FakeIce",
    "FakeIdpf",
    "FakeMlx5e",
    "FakeVeth",
    "FakeVirtioNet",
)

# rq->wq_type values of the mlx5 device interface (include/linux/mlx5/mlx5_ifc.h)
MLX5_WQ_TYPE_CYCLIC = 1
MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ = 2


class FakeVirtioNet:
    """
    A virtio_net netdev: ``struct virtnet_info`` with ``queues`` receive
    queues, each with a split (or packed) ``struct vring_virtqueue`` of
    ``ring_size`` descriptors whose ``desc_state[id].data`` :meth:`post` sets.
    """

    def __init__(
        self,
        ns: "NetNamespace",
        name: str,
        *,
        queues: int = 1,
        ring_size: int = 256,
        packed: bool = False,
    ) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="virtio_net", num_rx_queues=queues, priv="struct virtnet_info"
        )
        assert self.dev.priv is not None
        ring = "packed" if packed else "split"
        rqs = world.alloc("struct receive_queue", [{} for _ in range(queues)], count=queues)
        self.rqs = rqs
        self.states: List["KObject"] = []
        for queue in range(queues):
            states = world.alloc(
                f"struct vring_desc_state_{ring}",
                [{"data": 0} for _ in range(ring_size)],
                count=ring_size,
            )
            layout = world.prog.constant("VQ_LAYOUT_PACKED" if packed else "VQ_LAYOUT_SPLIT")
            vvq = world.alloc(
                "struct vring_virtqueue",
                {
                    "vq": {"index": 2 * queue},
                    "layout": layout.value_(),
                    ring: {"vring": {"num": ring_size}, "desc_state": states.addr},
                },
            )
            rqs.value[queue]["vq"] = vvq.addr
            self.states.append(states)
        self.dev.priv.set("dev", self.dev.obj.addr)
        self.dev.priv.set("rq", rqs.addr)
        self.dev.priv.set("max_queue_pairs", queues)
        self.dev.priv.set("curr_queue_pairs", queues)

    def own(self, queue: int, pool: "FakePagePool") -> None:
        """Make ``pool`` receive queue ``queue``'s page pool (``rq->page_pool``, v7.1+)."""
        self.rqs.value[queue]["page_pool"] = pool.obj.addr
        pool.owned_by = "virtio-net-rq"

    def post(self, queue: int, slot: int, buffer: int) -> int:
        """Post ``buffer`` (in a pool page) at descriptor ``slot``; the address of the word."""
        states = self.states[queue]
        states.value[slot]["data"] = buffer
        return states.addr + slot * states.type.type.size


class FakeVeth:
    """
    A veth netdev in XDP mode: ``struct veth_priv`` with ``queues`` rx
    queues whose ``xdp_ring`` (``ring_size`` slots) :meth:`queue` fills.
    """

    def __init__(
        self, ns: "NetNamespace", name: str, *, queues: int = 1, ring_size: int = 256
    ) -> None:
        world = ns.world
        self.world = world
        self.dev: NetDevice = ns.netdev(
            name, kind="veth", num_rx_queues=queues, priv="struct veth_priv"
        )
        assert self.dev.priv is not None
        self.ring_size = ring_size
        self.rqs = world.alloc("struct veth_rq", [{} for _ in range(queues)], count=queues)
        self.slots: Dict[int, List[int]] = {}
        self.queues: List[Tuple["KObject", List[int]]] = []
        for queue in range(queues):
            slots = world.alloc("void *", None, count=ring_size)
            words = [0] * ring_size
            slots.value = words
            self.rqs.value[queue].update(
                {
                    "dev": self.dev.obj.addr,
                    "xdp_ring": {"queue": slots.addr, "size": ring_size, "batch": 16},
                }
            )
            self.queues.append((slots, words))
        self.dev.priv.set("rq", self.rqs.addr)

    def own(self, queue: int, pool: "FakePagePool") -> None:
        """Make ``pool`` rx queue ``queue``'s page pool (``rq->page_pool``, v6.4+)."""
        self.rqs.value[queue]["page_pool"] = pool.obj.addr
        pool.owned_by = "veth-rq"

    def queue(self, queue: int, entry: int) -> int:
        """
        Produce ``entry`` (an skb address, or an xdp_frame address with
        ``VETH_XDP_FLAG``) into rx queue ``queue``'s ring; its slot.
        """
        slots, words = self.queues[queue]
        ring = self.rqs.value[queue]["xdp_ring"]
        producer = ring.get("producer", 0)
        words[producer] = entry
        ring["producer"] = (producer + 1) % self.ring_size
        return producer


class FakeMlx5e:
    """
    An mlx5e netdev (parent driver ``mlx5_core``): ``struct mlx5e_priv`` with
    ``queues`` channels, each with an rq of ``wqes`` WQEs, legacy (cyclic,
    one frag per WQE) or ``striding`` (``pages_per_wqe`` pages per WQE);
    :meth:`post` gives a WQE's buffer a pool page, :meth:`release` takes it
    back the way the driver does (the stale word stays).
    """

    def __init__(
        self,
        ns: "NetNamespace",
        name: str,
        *,
        queues: int = 1,
        wqes: int = 64,
        striding: bool = False,
        pages_per_wqe: int = 8,
    ) -> None:
        world = ns.world
        self.striding = striding
        self.pages_per_wqe = pages_per_wqe
        self.last = 1 << world.prog.constant("MLX5E_WQE_FRAG_LAST_IN_PAGE").value_()
        self.skip = 1 << world.prog.constant("MLX5E_WQE_FRAG_SKIP_RELEASE").value_()
        self.dev: NetDevice = ns.netdev(
            name, driver="mlx5_core", num_rx_queues=queues, priv="struct mlx5e_priv"
        )
        assert self.dev.priv is not None
        self.word = drgn.sizeof(world.type("unsigned long"))
        unit = world.type("struct mlx5e_frag_page")
        self.unit_size = drgn.sizeof(unit)
        self.netmem_at = drgn.offsetof(unit, "netmem")
        info = world.type("struct mlx5e_mpw_info")
        self.info_size = drgn.sizeof(info) + pages_per_wqe * self.unit_size
        self.bitmap_at = drgn.offsetof(info, "skip_release_bitmap")
        self.units_at = drgn.offsetof(info, "alloc_units")
        channels = world.alloc("struct mlx5e_channel *", None, count=queues)
        channels.value = []
        self.units: List["KObject"] = []
        self.frags: List["KObject"] = []
        for queue in range(queues):
            channel = world.alloc(
                "struct mlx5e_channel", {"netdev": self.dev.obj.addr, "ix": queue}
            )
            rq: Dict[str, object] = {"netdev": self.dev.obj.addr, "ix": queue}
            if striding:
                # WQE ix's mpw_info and its frag pages, as words; every skip
                # bit set until the WQE is filled (mlx5e_rq_alloc_mpwqe_info).
                words = wqes * self.info_size // self.word
                infos = world.alloc("unsigned long", None, count=words)
                infos.value = [0] * words
                for ix in range(wqes):
                    self._set_bitmap(infos, ix, (1 << pages_per_wqe) - 1)
                rq["wq_type"] = MLX5_WQ_TYPE_LINKED_LIST_STRIDING_RQ
                rq["mpwqe"] = {
                    "wq": {"fbc": {"sz_m1": wqes - 1}},
                    "info": infos.addr,
                    "pages_per_wqe": pages_per_wqe,
                }
                self.units.append(infos)
            else:
                units = world.alloc("struct mlx5e_frag_page", [{} for _ in range(wqes)], count=wqes)
                frags = world.alloc(
                    "struct mlx5e_wqe_frag_info",
                    [
                        {"frag_page": units.addr + ix * self.unit_size, "flags": self.skip}
                        for ix in range(wqes)
                    ],
                    count=wqes,
                )
                rq["wq_type"] = MLX5_WQ_TYPE_CYCLIC
                rq["wqe"] = {
                    "wq": {"fbc": {"sz_m1": wqes - 1}, "sz": wqes},
                    "frags": frags.addr,
                    "alloc_units": units.addr,
                    "info": {"num_frags": 1, "log_num_frags": 0},
                }
                self.units.append(units)
                self.frags.append(frags)
            channel.value["rq"] = rq
            channels.value.append(channel.addr)
        self.dev.priv.set("netdev", self.dev.obj.addr)
        self.dev.priv.set("channels", {"c": channels.addr, "num": queues})

    def _set_bitmap(self, infos: "KObject", ix: int, bits: int) -> None:
        infos.value[(ix * self.info_size + self.bitmap_at) // self.word] = bits

    def post(self, queue: int, wqe: int, netmem: int, page: int = 0) -> int:
        """
        Fill WQE ``wqe`` of rx queue ``queue`` with the pool page ``netmem``
        (page ``page`` of a striding WQE); the address of the word naming it.
        """
        units = self.units[queue]
        if self.striding:
            at = wqe * self.info_size
            bitmap = units.value[(at + self.bitmap_at) // self.word]
            self._set_bitmap(units, wqe, bitmap & ~(1 << page))
            word = at + self.units_at + page * self.unit_size + self.netmem_at
            units.value[word // self.word] = netmem
            return units.addr + word
        units.value[wqe]["netmem"] = netmem
        self.frags[queue].value[wqe]["flags"] = self.last
        return units.addr + wqe * self.unit_size + self.netmem_at

    def release(self, queue: int, wqe: int) -> None:
        """The driver released WQE ``wqe``'s pages (refill or flush); the stale words stay."""
        if self.striding:
            self._set_bitmap(self.units[queue], wqe, (1 << self.pages_per_wqe) - 1)
        else:
            self.frags[queue].value[wqe]["flags"] |= self.skip


class FakeBnxt:
    """
    A bnxt netdev (parent driver ``bnxt_en``): ``struct bnxt`` with ``queues``
    rx rings of ``ring_size`` head and ``agg_size`` aggregation descriptors;
    :meth:`post` and :meth:`post_agg` give a descriptor its buffer,
    :meth:`take` clears it as the driver does when it takes the buffer.
    """

    def __init__(
        self,
        ns: "NetNamespace",
        name: str,
        *,
        queues: int = 1,
        ring_size: int = 64,
        agg_size: int = 128,
    ) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="bnxt_en", num_rx_queues=queues, priv="struct bnxt"
        )
        assert self.dev.priv is not None
        self.heads: List["KObject"] = []
        self.aggs: List["KObject"] = []
        rings = []
        for _ in range(queues):
            heads = world.alloc(
                "struct bnxt_sw_rx_bd", [{} for _ in range(ring_size)], count=ring_size
            )
            aggs = world.alloc(
                "struct bnxt_sw_rx_agg_bd", [{} for _ in range(agg_size)], count=agg_size
            )
            rings.append({"rx_buf_ring": heads.addr, "rx_agg_ring": aggs.addr})
            self.heads.append(heads)
            self.aggs.append(aggs)
        rx_ring = world.alloc("struct bnxt_rx_ring_info", rings, count=queues)
        self.dev.priv.set("dev", self.dev.obj.addr)
        self.dev.priv.set("rx_ring", rx_ring.addr)
        self.dev.priv.set("rx_nr_rings", queues)
        self.dev.priv.set("rx_ring_mask", ring_size - 1)
        self.dev.priv.set("rx_agg_ring_mask", agg_size - 1)

    def post(self, queue: int, slot: int, data: int) -> int:
        """Post the head buffer at ``data`` (in a pool page); the address of the word."""
        heads = self.heads[queue]
        heads.value[slot]["data"] = data
        return (
            heads.addr
            + slot * drgn.sizeof(heads.type.type)
            + drgn.offsetof(heads.type.type, "data")
        )

    def post_agg(self, queue: int, slot: int, netmem: int) -> int:
        """Post the aggregation buffer ``netmem``; the address of the word."""
        aggs = self.aggs[queue]
        aggs.value[slot]["netmem"] = netmem
        return (
            aggs.addr + slot * drgn.sizeof(aggs.type.type) + drgn.offsetof(aggs.type.type, "netmem")
        )

    def take(self, queue: int, slot: int) -> None:
        """The driver took the head buffer of ``slot`` (``rx_buf->data = NULL``)."""
        self.heads[queue].value[slot]["data"] = 0


class FakeGve:
    """
    A gve netdev (parent driver ``gve``) in the DQO RDA format:
    ``struct gve_priv`` with ``queues`` rx rings, each with a page pool and
    ``states`` buffer states chained free; :meth:`post` takes one for a
    pool page as ``gve_alloc_buffer()`` does (``next`` = its own id).
    """

    def __init__(self, ns: "NetNamespace", name: str, *, queues: int = 1, states: int = 64) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="gve", num_rx_queues=queues, priv="struct gve_priv"
        )
        assert self.dev.priv is not None
        self.states: List["KObject"] = []
        rings = []
        for _ in range(queues):
            # The free list: each state's next is the following id, -1 ends it.
            states_obj = world.alloc(
                "struct gve_rx_buf_state_dqo",
                [{"next": i + 1 if i + 1 < states else -1} for i in range(states)],
                count=states,
            )
            self.states.append(states_obj)
            rings.append({"dqo": {"buf_states": states_obj.addr, "num_buf_states": states}})
        self.rx = world.alloc("struct gve_rx_ring", rings, count=queues)
        fmt = world.prog.constant("GVE_DQO_RDA_FORMAT").value_()
        self.dev.priv.set("dev", self.dev.obj.addr)
        self.dev.priv.set("rx", self.rx.addr)
        self.dev.priv.set("rx_cfg", {"num_queues": queues, "max_queues": queues})
        self.dev.priv.set("queue_format", fmt)

    def use_pool(self, queue: int, pool: int) -> None:
        """Give rx queue ``queue`` the ``struct page_pool`` at ``pool``."""
        self.rx.value[queue]["dqo"]["page_pool"] = pool

    def post(self, queue: int, buffer_id: int, netmem: int) -> int:
        """Buffer state ``buffer_id`` takes ``netmem``; the address of the word."""
        states = self.states[queue]
        states.value[buffer_id].update({"next": buffer_id, "page_info": {"netmem": netmem}})
        state = states.type.type
        return (
            states.addr + buffer_id * drgn.sizeof(state) + drgn.offsetof(state, "page_info.netmem")
        )


class FakeIce:
    """
    An ice netdev (parent driver ``ice``): ``struct ice_netdev_priv`` whose
    vsi has ``queues`` rx rings of ``count`` libeth buffers from a page pool;
    :meth:`post` fills the descriptor at ``next_to_use``, :meth:`clean`
    takes the one at ``next_to_clean`` back (its netmem word stays).
    """

    def __init__(self, ns: "NetNamespace", name: str, *, queues: int = 1, count: int = 64) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="ice", num_rx_queues=queues, priv="struct ice_netdev_priv"
        )
        assert self.dev.priv is not None
        self.count = count
        self.fqes: List["KObject"] = []
        self.rings: List["KObject"] = []
        for queue in range(queues):
            fqes = world.alloc("struct libeth_fqe", [{} for _ in range(count)], count=count)
            ring = world.alloc(
                "struct ice_rx_ring",
                {
                    "netdev": self.dev.obj.addr,
                    "rx_fqes": fqes.addr,
                    "count": count,
                    "q_index": queue,
                },
            )
            self.fqes.append(fqes)
            self.rings.append(ring)
        rx_rings = world.alloc("struct ice_rx_ring *", [r.addr for r in self.rings], count=queues)
        vsi = world.alloc(
            "struct ice_vsi",
            {"netdev": self.dev.obj.addr, "rx_rings": rx_rings.addr, "num_rxq": queues},
        )
        self.dev.priv.set("vsi", vsi.addr)

    def use_pool(self, queue: int, pool: int) -> None:
        """Give rx queue ``queue`` the ``struct page_pool`` at ``pool``."""
        self.rings[queue].value["pp"] = pool

    def post(self, queue: int, netmem: int) -> Tuple[int, int]:
        """Post ``netmem`` at ``next_to_use``; its slot and the address of its word."""
        ring = self.rings[queue].value
        slot = ring.get("next_to_use", 0)
        fqes = self.fqes[queue]
        fqes.value[slot]["netmem"] = netmem
        ring["next_to_use"] = (slot + 1) % self.count
        fqe = fqes.type.type
        return slot, fqes.addr + slot * drgn.sizeof(fqe) + drgn.offsetof(fqe, "netmem")

    def clean(self, queue: int) -> None:
        """The driver took the descriptor at ``next_to_clean`` back."""
        ring = self.rings[queue].value
        ring["next_to_clean"] = (ring.get("next_to_clean", 0) + 1) % self.count


class FakeIdpf:
    """
    An idpf netdev (parent driver ``idpf``).  In the split queue model a
    vport with ``groups`` rx queue groups, each with one rx queue (its
    ``idx`` the group's) and ``bufqs`` buffer queues of ``count`` libeth
    buffers; :meth:`post` fills a buffer id, :meth:`take` zeroes it as the
    rx queue does when the device returns it.  With ``single=True`` the
    single queue model: one group of ``groups`` rx queues, each posting
    ``count`` buffers of its own (:meth:`post` with bufq 0, ``group`` the
    queue).  :meth:`stash` leaves an unfinished frame on an rx queue.
    """

    def __init__(
        self,
        ns: "NetNamespace",
        name: str,
        *,
        groups: int = 1,
        bufqs: int = 1,
        count: int = 64,
        single: bool = False,
    ) -> None:
        world = ns.world
        self.world = world
        self.dev: NetDevice = ns.netdev(
            name, driver="idpf", num_rx_queues=groups, priv="struct idpf_netdev_priv"
        )
        assert self.dev.priv is not None
        self.bufs: List[List["KObject"]] = []
        self.bufqs: List[List["KObject"]] = []
        self.rxqs: List["KObject"] = []
        if single:
            for queue in range(groups):
                fqes = world.alloc("struct libeth_fqe", [{} for _ in range(count)], count=count)
                self.bufs.append([fqes])
                self.rxqs.append(
                    world.alloc(
                        "struct idpf_rx_queue",
                        {"rx_buf": fqes.addr, "desc_count": count, "idx": queue},
                    )
                )
            singleq = {"num_rxq": groups, "rxqs": [q.addr for q in self.rxqs]}
            grps = world.alloc("struct idpf_rxq_group", {"singleq": singleq})
            model = "VIRTCHNL2_QUEUE_MODEL_SINGLE"
            ngroups = 1
        else:
            values = []
            for group in range(groups):
                bufs = [
                    world.alloc("struct libeth_fqe", [{} for _ in range(count)], count=count)
                    for _ in range(bufqs)
                ]
                self.bufs.append(bufs)
                queues = world.alloc(
                    "struct idpf_bufq_set",
                    [{"bufq": {"buf": b.addr, "desc_count": count}} for b in bufs],
                    count=bufqs,
                )
                self.bufqs.append([queues])
                rxq_set = world.alloc("struct idpf_rxq_set", {"rxq": {"idx": group}})
                self.rxqs.append(rxq_set)
                values.append(
                    {
                        "splitq": {
                            "num_bufq_sets": bufqs,
                            "bufq_sets": queues.addr,
                            "num_rxq_sets": 1,
                            "rxq_sets": [rxq_set.addr],
                        }
                    }
                )
            grps = world.alloc("struct idpf_rxq_group", values, count=groups)
            model = "VIRTCHNL2_QUEUE_MODEL_SPLIT"
            ngroups = groups
        self.single = single
        vport = world.alloc(
            "struct idpf_vport",
            {
                "dflt_qv_rsrc": {
                    "num_rxq_grp": ngroups,
                    "rxq_model": world.prog.constant(model).value_(),
                    "rxq_grps": grps.addr,
                },
                "netdev": self.dev.obj.addr,
            },
        )
        self.dev.priv.set("vport", vport.addr)

    def _rxq(self, queue: int) -> Dict:
        value: Dict = self.rxqs[queue].value
        return value if self.single else value["rxq"]

    def use_pool(self, group: int, bufq: int, pool: int) -> None:
        """Give buffer queue ``bufq`` of group ``group`` (or rx queue ``group``) a page pool."""
        if self.single:
            self._rxq(group)["pp"] = pool
        else:
            self.bufqs[group][0].value[bufq]["bufq"]["pp"] = pool

    def post(self, group: int, bufq: int, buf_id: int, netmem: int) -> int:
        """Post ``netmem`` as buffer ``buf_id``; the address of its word."""
        bufs = self.bufs[group][bufq]
        bufs.value[buf_id]["netmem"] = netmem
        fqe = bufs.type.type
        return bufs.addr + buf_id * drgn.sizeof(fqe) + drgn.offsetof(fqe, "netmem")

    def take(self, group: int, bufq: int, buf_id: int) -> None:
        """The device returned buffer ``buf_id``: the rx queue zeroes its netmem."""
        self.bufs[group][bufq].value[buf_id]["netmem"] = 0

    def stash(self, queue: int, head: "FakePage", frags: List[int]) -> Tuple[int, List[int]]:
        """
        Leave on rx queue ``queue`` an unfinished frame whose head buffer is
        the first half of ``head`` and whose other buffers are the netmems
        ``frags`` (in the head's shared info, XDP_FLAGS_HAS_FRAGS set); the
        address of the stash's ``data`` and of each frag's netmem word.
        """
        world = self.world
        headroom, frame_sz = 256, world.page_size // 2
        start = world.page_virt(head.pfn)
        stash: Dict[str, int] = {"data": start + headroom, "headroom": headroom, "len": 64}
        stash["frame_sz"] = frame_sz
        words: List[int] = []
        if frags:
            stash["flags"] = world.prog.constant("XDP_FLAGS_HAS_FRAGS").value_()
            shinfo_type = world.type("struct skb_shared_info")
            size = -(-drgn.sizeof(shinfo_type) // 64) * 64  # SKB_DATA_ALIGN()
            shinfo = world.at(
                start + frame_sz - size,
                "struct skb_shared_info",
                {"nr_frags": len(frags), "frags": [{"netmem": n} for n in frags]},
            )
            words = [
                shinfo.addr + drgn.offsetof(shinfo_type, f"frags[{i}].netmem")
                for i in range(len(frags))
            ]
        self._rxq(queue)["xdp"] = stash
        rxq = self.rxqs[queue]
        data = rxq.addr + drgn.offsetof(rxq.type, "xdp.data" if self.single else "rxq.xdp.data")
        return data, words


class FakeFbnic:
    """
    An fbnic netdev (parent driver ``fbnic``): ``struct fbnic_net`` whose
    ``rx[q]`` is the completion ring of a ``struct fbnic_q_triad`` with a
    header (``sub0``) and a payload (``sub1``) page queue of ``size``
    ``struct fbnic_rx_buf`` each; :meth:`post` sets an entry's page,
    :meth:`take` clears it as ``fbnic_page_pool_drain()`` does.
    """

    def __init__(self, ns: "NetNamespace", name: str, *, queues: int = 1, size: int = 16) -> None:
        world = ns.world
        self.dev: NetDevice = ns.netdev(
            name, driver="fbnic", num_rx_queues=queues, priv="struct fbnic_net"
        )
        assert self.dev.priv is not None
        self.bufs: List[Dict[str, "KObject"]] = []
        triads = []
        for queue in range(queues):
            bufs = {
                sub: world.alloc("struct fbnic_rx_buf", [{} for _ in range(size)], count=size)
                for sub in ("sub0", "sub1")
            }
            self.bufs.append(bufs)
            ring = {sub: {"rx_buf": b.addr, "size_mask": size - 1} for sub, b in bufs.items()}
            triads.append(world.alloc("struct fbnic_q_triad", {**ring, "cmpl": {"q_idx": queue}}))
        self.triads = triads
        cmpl = drgn.offsetof(world.type("struct fbnic_q_triad"), "cmpl")
        self.dev.priv.set("rx", [t.addr + cmpl for t in triads])
        self.dev.priv.set("netdev", self.dev.obj.addr)
        buf = world.type("struct fbnic_rx_buf")
        # a struct page * before 426e13db369c (v6.18), a netmem_ref since
        self.member = "netmem" if any(m.name == "netmem" for m in buf.members) else "page"

    def post(self, queue: int, sub: str, slot: int, netmem: int) -> int:
        """Post ``netmem`` at ``slot`` of page queue ``sub``; the address of its word."""
        bufs = self.bufs[queue][sub]
        bufs.value[slot][self.member] = netmem
        buf = bufs.type.type
        return bufs.addr + slot * drgn.sizeof(buf) + drgn.offsetof(buf, self.member)

    def take(self, queue: int, sub: str, slot: int) -> None:
        """The driver took the page at ``slot`` back."""
        self.bufs[queue][sub].value[slot][self.member] = 0

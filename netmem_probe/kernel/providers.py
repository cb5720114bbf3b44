"""
Memory providers
----------------

Page pools can be filled by a memory provider instead of the page allocator:
devmem TCP (dma-buf bindings, Linux 6.12+) and io_uring zero-copy receive
(zcrx, Linux 6.15+).  Both hand out ``struct net_iov``s that live in arrays
owned by an *area*: a ``struct dmabuf_genpool_chunk_owner`` (6.12-6.14), or a
``struct net_iov_area`` embedded in the chunk owner or in a
``struct io_zcrx_area`` (6.15+).

:class:`ProviderScanner` finds every provider the kernel can reach (the
static ``net_devmem_dmabuf_bindings`` XArray, the pools whose ``mp_priv``
names a provider, the rx queues' ``mp_params``, io_uring rings'
``zcrx_ctxs``), reads each one with :mod:`~netmem_probe.kernel.devmem` or
:mod:`~netmem_probe.kernel.zcrx`, and tells what each niov is doing with
:mod:`~netmem_probe.kernel.niovs`.
"""

from dataclasses import replace
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import drgn
from drgn import Program

from netmem_probe.kernel.actors import Owner, SocketOwners
from netmem_probe.kernel.areas import MAX_RX_QUEUES, ProviderArea, net_iov_size
from netmem_probe.kernel.devmem import BindingReader, binding_sockets, dmabuf_bindings_xarray
from netmem_probe.kernel.netdev import NetdevReader, for_each_net_address
from netmem_probe.kernel.niovs import NiovInfo, NiovStates
from netmem_probe.kernel.page_pool import PagePoolInfo, PagePoolScanner, pool_provider
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import Problems, list_nodes, xa_entries
from netmem_probe.kernel.zcrx import ZcrxReader, io_uring_files, ring_zcrx_ifqs

__all__ = ("ProviderScanner",)


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
        self.netdevs = NetdevReader(prog, self.problems)
        self._areas: Optional[List[ProviderArea]] = None
        self._pools: Optional[List[PagePoolInfo]] = None
        self._states: Optional[NiovStates] = None
        # zcrx ifq -> the processes and descriptors holding it (file scan)
        self._ifq_owners: Optional[Dict[int, List[Owner]]] = None

    # -- discovery ---------------------------------------------------------

    def pools(self) -> List[PagePoolInfo]:
        """Every page pool (:class:`~netmem_probe.kernel.page_pool.PagePoolInfo`)."""
        if self._pools is None:
            self._pools = list(self.pool_scanner.pools())
        return self._pools

    def areas(self) -> List[ProviderArea]:
        """Every reachable provider area: bindings by id, then zcrx areas."""
        if self._areas is None and not net_iov_size(self.prog):
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
            args = (self.prog, self.problems, self.netdevs, self.pools())
            devmem = BindingReader(*args)
            areas = [a for a in (devmem.read(b) for b in bindings) if a is not None]
            areas.sort(key=lambda a: a.id)
            if self.scan_files and areas:
                areas = self._with_binding_owners(areas)
            zcrx = ZcrxReader(*args)
            for ifq in ifqs:
                owners = self._ifq_owners
                areas.extend(
                    zcrx.areas(ifq, tuple(owners.get(ifq, ())) if owners is not None else None)
                )
            self._areas = areas
        return self._areas

    def _with_binding_owners(self, bindings: List[ProviderArea]) -> List[ProviderArea]:
        """
        The bindings with their owners: the processes holding the netlink
        socket that bound each one (none for an unbound binding); unchanged
        (owners None) when the sockets or the processes cannot be read.
        """
        sockets = binding_sockets(self.prog, self.problems)
        if sockets is None:
            return bindings
        processes = SocketOwners(self.prog, self.problems)
        out = []
        for area in bindings:
            # An unbound binding is on no socket: 0, which no process holds.
            owners = processes.of(sockets.get(area.address, 0))
            if owners is None:  # no file tables to read
                return bindings
            out.append(replace(area, owners=owners))
        return out

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
        """
        The ifqs of the rings given and of the io_uring files tasks have
        open; records who holds each (:attr:`_ifq_owners`) when the files
        were scanned.
        """
        holders: Dict[int, Tuple[Owner, ...]] = dict.fromkeys(self.rings, ())
        ifqs: List[int] = []
        found = io_uring_files(self.prog, self.problems) if self.scan_files else None
        if found is not None:
            self._ifq_owners = {ifq: list(owners) for ifq, owners in found.boxes.items()}
            ifqs = list(found.boxes)
            holders.update(found.rings)
        for ctx, owners in holders.items():
            try:
                ring_ifqs = ring_zcrx_ifqs(self.prog, ctx, self.problems)
            except drgn.FaultError as e:
                self.problems.fault("io_ring_ctx", ctx, e)
                continue
            ifqs.extend(ring_ifqs)
            if self._ifq_owners is not None:
                for ifq in ring_ifqs:
                    self._ifq_owners.setdefault(ifq, []).extend(owners)
        return [ifq for ifq in ifqs if ifq]

    # -- niovs -------------------------------------------------------------

    def states(self) -> NiovStates:
        """What the niovs of every area are doing, worked out once."""
        if self._states is None:
            self._states = NiovStates(self.prog, self.problems, self.areas(), self.pools())
        return self._states

    def niovs(self, area: ProviderArea) -> Iterator[NiovInfo]:
        """Every consistent niov of ``area`` (:meth:`NiovStates.niovs`)."""
        return self.states().niovs(area)

    def totals(self, area: ProviderArea) -> Dict[str, int]:
        """niovs of ``area`` per state (:meth:`NiovStates.totals`)."""
        return self.states().totals(area)

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

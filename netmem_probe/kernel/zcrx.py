"""
io_uring zero-copy receive
--------------------------

Since Linux 6.15 an io_uring ring can register a zcrx interface queue
(``struct io_zcrx_ifq``) on an rx queue; its areas (``struct io_zcrx_area``,
several per ifq since 7.3) own arrays of ``struct net_iov`` that user space
gets through the refill queue.  These helpers find the ifqs a ring has, the
rings and exported ifqs tasks have open, and read each area as a
:class:`~netmem_probe.kernel.areas.ProviderArea`.
"""

from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import drgn
from drgn import Object, Program

from netmem_probe.kernel.actors import MAX_TASKS, Owner, task_files, task_owner
from netmem_probe.kernel.areas import MAX_AREAS, MAX_NIOVS, AreaReader, NiovSpan, ProviderArea
from netmem_probe.kernel.page_pool import provider_ops_address
from netmem_probe.kernel.structs import StructReader, member_exists
from netmem_probe.kernel.walk import Problems, list_nodes, read_words, wrap, xa_entries

__all__ = ("IoUringFiles", "ZcrxReader", "io_uring_files", "ring_zcrx_ifqs")


def ring_zcrx_ifqs(prog: Program, ctx: int, problems: Optional[Problems] = None) -> List[int]:
    """
    The zcrx ifqs an io_uring ring has registered.

    :param ctx: ``struct io_ring_ctx *``.
    :return: ``struct io_zcrx_ifq *`` addresses: the ``ctx->zcrx_ctxs`` XArray
        (since "io_uring/zcrx: add support for multiple ifqs", posted April
        2025, its commit id not found with the search tools; later an ifq
        can be shared by several rings), or the single ``ctx->ifq`` before.
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


class IoUringFiles(NamedTuple):
    """The io_uring files tasks have open, with the descriptors that hold each."""

    #: ``struct io_ring_ctx *`` -> its owners (process, ring fd).
    rings: Dict[int, Tuple[Owner, ...]]
    #: ``struct io_zcrx_ifq *`` of exported ``"[zcrx]"`` files -> their owners.
    boxes: Dict[int, Tuple[Owner, ...]]


def io_uring_files(prog: Program, problems: Optional[Problems] = None) -> Optional[IoUringFiles]:
    """
    Rings and exported zcrx ifqs reachable from the files tasks have open.

    A device-less zcrx ifq (``ZCRX_REG_NODEV``, Linux 7.1+) has no page pool
    and no rx queue; only the io_uring rings that registered it
    (``file->f_op == &io_uring_fops``, ``private_data`` a
    ``struct io_ring_ctx *``, then ``ctx->zcrx_ctxs``) or a ``"[zcrx]"`` file
    made by the export control op (``f_op == &zcrx_box_fops``,
    ``private_data`` the ifq) lead to it.  Every process on
    ``init_task.tasks`` is looked at, as the socket owners are: bounded, each
    link checked, each file table read once.

    :return: the rings and exported ifqs, each with the processes and
        descriptors holding it; None when the target has no task types or no
        io_uring (nothing can be told).
    """
    fops = provider_ops_address(prog, "io_uring_fops")
    box = provider_ops_address(prog, "zcrx_box_fops")
    try:
        tasks_at = drgn.offsetof(prog.type("struct task_struct"), "tasks")
        prog.type("struct files_struct")
        file_type = prog.type("struct file")
        f_op_at = drgn.offsetof(file_type, "f_op")
        private_at = drgn.offsetof(file_type, "private_data")
    except LookupError:
        return None
    if fops is None and box is None:
        return None
    rings: Dict[int, List[Owner]] = {}
    boxes: Dict[int, List[Owner]] = {}
    tables: Set[int] = set()
    head = prog["init_task"].address_ + tasks_at
    walk = list_nodes(
        prog, head, limit=MAX_TASKS, what="task list", problems=problems or Problems()
    )
    for node in walk:
        task = Object(prog, "struct task_struct *", node - tasks_at)
        try:
            table = task.files.value_()
            if not table or table in tables:  # a kernel thread, or a shared table
                continue
            tables.add(table)
            for fd, file in enumerate(task_files(prog, task.value_())):
                if not file:
                    continue
                f_op = prog.read_word(wrap(file + f_op_at))
                held = rings if f_op == fops else (boxes if f_op == box else None)
                if held is not None:
                    owner = task_owner(prog, task, fd)
                    held.setdefault(prog.read_word(wrap(file + private_at)), []).append(owner)
        except drgn.FaultError as e:
            if problems is not None:
                problems.fault("task file table", task.value_(), e)
    return IoUringFiles(
        {ctx: tuple(o) for ctx, o in rings.items()}, {ifq: tuple(o) for ifq, o in boxes.items()}
    )


class ZcrxReader(AreaReader):
    """Reads zcrx ifqs, each of their areas as one area of one span."""

    def areas(self, ifq: int, owners: Optional[Tuple[Owner, ...]] = None) -> List[ProviderArea]:
        """
        The areas of the ifq at ``ifq`` (``struct io_zcrx_ifq *``); unreadable
        ones reported.  ``owners``: the processes holding it (see
        :attr:`ProviderArea.owners`).
        """
        prog = self.prog
        reader = StructReader(
            prog,
            "struct io_zcrx_ifq",
            {
                # One area until "io_uring/zcrx: array of areas" (posted in
                # 2026; in Debian 7.3.4; its commit id not found with the
                # search tools) made ifq->areas[nr_areas].
                "area": "area",
                "areas": "areas",
                "nr_areas": "nr_areas",
                # Since "io_uring/zcrx: make niov size variable" (posted
                # August 2025; commit id not found); user space sets it with
                # rx_buf_len since Linux kernel commit 795663b4d160, merged
                # for v7.0 (merge 041c16acbafb).
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
        pool_ids, pool_addresses = self._pool_fields(ifq, "io_uring")
        out = []
        for address in addresses:
            found = self._span(ifq, address)
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
                    pools=pool_ids,
                    pool_addresses=pool_addresses,
                    refcount=q["refs"],
                    direction="rx",
                    niov_shift=shift,
                    size=size,
                    spans=(span,),
                    owners=owners,
                )
            )
        return out

    def _span(self, ifq: int, address: int) -> Optional[Tuple[NiovSpan, int, int]]:
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

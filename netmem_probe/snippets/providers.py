"""drgn code for ``providers`` and ``niovs``: devmem bindings and io_uring zcrx areas."""

import textwrap
from typing import Optional, Sequence

import click
from drgn import Program

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
from netmem_probe.snippets.netmem import define_niov_desc
from netmem_probe.snippets.pools import (
    define_name,
    define_page_pools,
    define_pool_places,
    define_provider,
    define_variable_address,
)

__all__ = ("define_areas", "define_niov_states", "niovs_code", "providers_code")


def _define_binding_area(s: Snippet) -> None:
    prog = s.prog
    if has_member(prog, "struct net_devmem_dmabuf_binding", "niov_shift"):
        shift = "shift = b.niov_shift.value_()  # rx-page-size (Linux 7.3+)"
    else:
        shift = "shift = PAGE_SHIFT  # one niov per page before rx-page-size (Linux 7.3)"
    if has_member(prog, "struct dmabuf_genpool_chunk_owner", "area"):
        area = """
            # Since Linux kernel commit 7d60fa9e1ab1 ("net: generalise net_iov
            # chunk owners") (in v6.15) the niov array is the owner's area.
            area = owner.area
            """
    else:
        area = "area = owner  # niovs, num_niovs, base_virtual: before v6.15"
    s.define(
        "binding_area",
        '''
        def bound_queues(b):
            """The indexes of the rx queues a binding is bound to."""
            queues = []
            for _, entry in xa_for_each(b.bound_rxqs.address_of_()):
                rxq = cast("struct netdev_rx_queue *", entry)
                queues.append((rxq - rxq.dev._rx).value_())  # get_netdev_rx_queue_index()
            return sorted(queues)


        def binding_area(address):
            """A devmem dma-buf binding: the niov arrays of its genpool chunks."""
            b = Object(prog, "struct net_devmem_dmabuf_binding *", address)
            $shift
            spans = []
            for chunk in list_for_each_entry("struct gen_pool_chunk",
                                             b.chunk_pool.chunks.address_of_(), "next_chunk"):
                owner = cast("struct dmabuf_genpool_chunk_owner *", chunk.owner)
                $area
                count = (chunk.end_addr - chunk.start_addr + 1).value_() >> shift
                # The genpool's bitmap: a set bit is an allocated niov.
                free = {i for i in range(count) if not chunk.bits[i // 64].value_() >> (i % 64) & 1}
                spans.append({"owner": area.address_, "niovs": area.niovs.value_(),
                              "count": count, "base": area.base_virtual.value_(), "free": free,
                              "user_refs": None})
            # Chunks in dma-buf order.
            spans.sort(key=lambda span: span["base"])
            for i, span in enumerate(spans):
                span["chunk"] = i
            return {"kind": "dmabuf", "id": b.id.value_(), "area": f"dmabuf:{b.id.value_()}",
                    "address": hex(address), "netdev": name(b.dev), "queues": bound_queues(b),
                    "pools": pools_of(address, "dmabuf"), "shift": shift, "spans": spans}
        ''',
        [
            ("drgn", "Object"),
            ("drgn", "cast"),
            ("drgn.helpers.linux.list", "list_for_each_entry"),
            ("drgn.helpers.linux.xarray", "xa_for_each"),
        ],
        shift=shift,
        area=area,
    )


def _define_zcrx_areas(s: Snippet) -> None:
    prog = s.prog
    if has_member(prog, "struct io_zcrx_ifq", "areas"):
        areas = """
            # An ifq has an array of areas since Linux 7.3.
            areas = [q.areas[i] for i in range(q.nr_areas.value_())]
            """
    else:
        areas = "areas = [q.area] if q.area else []  # one area per ifq before Linux 7.3"
    if has_member(prog, "struct io_zcrx_ifq", "niov_shift"):
        shift = "shift = q.niov_shift.value_()  # rx_buf_len (Linux 6.17+)"
    else:
        shift = "shift = PAGE_SHIFT  # one niov per page before rx_buf_len (Linux 6.17)"
    s.define(
        "zcrx_areas",
        '''
        def zcrx_areas(address):
            """The areas of an io_uring zcrx interface queue."""
            q = Object(prog, "struct io_zcrx_ifq *", address)
            $shift
            $areas
            out = []
            for area in areas:
                nia = area.nia
                count = nia.num_niovs.value_()
                # Free niovs: the first free_count entries of the freelist.
                free = {area.freelist[i].value_() for i in range(area.free_count.value_())}
                # Buffers user space was given and has not returned.
                user_refs = [area.user_refs[i].counter.value_() for i in range(count)]
                out.append({
                    "kind": "io_uring", "id": area.area_id.value_(),
                    "area": f"io_uring:{area.value_():#x}", "address": hex(area.value_()),
                    "netdev": name(q.netdev), "queues": [q.if_rxq.value_()] if q.netdev else [],
                    "pools": pools_of(address, "io_uring"), "shift": shift,
                    "spans": [{"owner": nia.address_, "niovs": nia.niovs.value_(),
                               "count": count, "base": nia.base_virtual.value_(),
                               "free": free, "user_refs": user_refs, "chunk": None}]})
            return out
        ''',
        [("drgn", "Object")],
        shift=shift,
        areas=areas,
    )


def _rx_queues(prog: Program) -> str:
    if not has_member(prog, "struct netdev_rx_queue", "mp_params"):
        return ""
    s_code = """
        # An rx queue bound to a provider names it in mp_params.
        for net in for_each_net(prog):
            for dev in for_each_netdev(net):
                for i in range(dev.num_rx_queues.value_()):
                    params = dev._rx[i].mp_params
                    kind = provider(params)
                    if kind == "dmabuf" and params.mp_priv:
                        bindings[params.mp_priv.value_()] = None
                    elif kind == "io_uring" and params.mp_priv:
                        ifqs[params.mp_priv.value_()] = None
        """
    return s_code


def _define_open_files(s: Snippet) -> None:
    """``open_files()``: the ``struct file *`` of every fd of every process."""
    s.define(
        "open_files",
        '''
        def open_files():
            """Each file a process has open (a kernel thread has no file table)."""
            tasks = prog["init_task"].tasks.address_of_()
            for task in list_for_each_entry("struct task_struct", tasks, "tasks"):
                if not task.files:
                    continue
                fdt = task.files.fdt
                for fd in range(fdt.max_fds.value_()):
                    file = fdt.fd[fd]
                    if file:
                        yield file
        ''',
        [("drgn.helpers.linux.list", "list_for_each_entry")],
    )


def _rings(s: Snippet, rings: Sequence[int], scan_files: bool) -> str:
    """Code that adds the zcrx ifqs of io_uring rings (``--ring``, tasks' files)."""
    prog = s.prog
    ctx_type = "struct io_ring_ctx"
    if has_member(prog, ctx_type, "zcrx_ctxs"):
        ifqs = """
            # A ring's zcrx ifqs (several, shareable between rings, since Linux 6.17).
            for _, ifq in xa_for_each(ctx.zcrx_ctxs.address_of_()):
                ifqs[ifq.value_()] = None
            """
        s.add_from_import("drgn.helpers.linux.xarray", "xa_for_each")
    elif has_member(prog, ctx_type, "ifq"):
        ifqs = """
            if ctx.ifq:  # one zcrx ifq per ring in Linux 6.15-6.16
                ifqs[ctx.ifq.value_()] = None
            """
    else:
        return ""
    code = [f"rings = [{', '.join(hex(r) for r in rings)}]" + ("  # --ring" if rings else "")]
    if (
        scan_files
        and has_type(prog, "struct task_struct")
        and has_type(prog, "struct files_struct")
    ):
        define_variable_address(s)
        _define_open_files(s)
        code.append(
            """\
# A device-less ifq (ZCRX_REG_NODEV, Linux 7.1+) has no pool and no rx
# queue: only the io_uring rings of tasks' open files lead to it, or an
# ifq exported as a file (zcrx_box_fops, Linux 7.1+).
fops = {variable_address("io_uring_fops"): "ring", variable_address("zcrx_box_fops"): "ifq"}
fops.pop(None, None)
for file in open_files() if fops else ():
    what = fops.get(file.f_op.value_())
    if what == "ring":
        rings.append(file.private_data.value_())
    elif what == "ifq":
        ifqs[file.private_data.value_()] = None"""
        )
    elif not rings:
        return ""  # no task or file types, or no io_uring: no rings to look through
    code.append(
        "for ctx in dict.fromkeys(rings):\n"
        '    ctx = Object(prog, "struct io_ring_ctx *", ctx)\n'
        + textwrap.indent(textwrap.dedent(ifqs).strip("\n"), "    ")
    )
    s.add_from_import("drgn", "Object")
    return "\n".join(code)


def define_areas(s: Snippet, rings: Sequence[int] = (), scan_files: bool = True) -> None:
    """``areas()``: every provider area the kernel can reach, as dicts."""
    prog = s.prog
    define_page_pools(s)
    define_provider(s)
    define_name(s)
    s.define("PAGE_SHIFT", 'PAGE_SHIFT = prog["PAGE_SHIFT"].value_()')
    _define_binding_area(s)
    _define_zcrx_areas(s)
    if has_type(prog, "struct net_devmem_dmabuf_binding"):
        define_variable_address(s)
        s.add_from_import("drgn", "Object")
        registry = """
            # The registry of bindings (net/core/devmem.c).  A binding whose
            # netlink socket closed leaves it but lives on while pools use it.
            registry = variable_address("net_devmem_dmabuf_bindings", "devmem.c")
            if registry is not None:
                for _, binding in xa_for_each(Object(prog, "struct xarray *", registry)):
                    bindings[binding.value_()] = None
            """
    else:
        registry = ""
    rx_queues = _rx_queues(prog)
    if rx_queues:
        s.add_from_import("drgn.helpers.linux.net", "for_each_net")
        s.add_from_import("drgn.helpers.linux.net", "for_each_netdev")
    s.define(
        "areas",
        '''
        def pools_of(mp_priv, kind):
            """The ids of the pools a provider fills."""
            return sorted(pool.user.id.value_() for pool in for_each_pool()
                          if provider(pool) == kind and pool.mp_priv.value_() == mp_priv)


        def areas():
            """Every memory-provider area: devmem bindings by id, then zcrx areas."""
            bindings, ifqs = {}, {}
            $registry
            for pool in for_each_pool():
                kind = provider(pool)
                if kind == "dmabuf" and pool.mp_priv:
                    bindings[pool.mp_priv.value_()] = None
                elif kind == "io_uring" and pool.mp_priv:
                    ifqs[pool.mp_priv.value_()] = None
            $rx_queues
            $rings
            out = sorted((binding_area(b) for b in bindings), key=lambda area: area["id"])
            for ifq in ifqs:
                out.extend(zcrx_areas(ifq))
            return out
        ''',
        [("drgn.helpers.linux.xarray", "xa_for_each")],
        registry=registry,
        rx_queues=rx_queues,
        rings=_rings(s, rings, scan_files),
    )


def _token_niovs(s: Snippet) -> str:
    """
    Code that sets ``TOKEN_NIOVS``: the devmem niovs the TCP sockets of
    tasks' open files hold under a token (empty before Linux 6.12).
    """
    prog = s.prog
    sock = "struct sock"
    if not (
        has_member(prog, sock, "sk_user_frags")
        and prog.type(sock).member("sk_user_frags").type.unaliased().type_name() == "struct xarray"
        and has_type(prog, "struct task_struct")
        and has_type(prog, "struct files_struct")
    ):
        return "TOKEN_NIOVS = set()  # no devmem TCP tokens (Linux 6.12+) or no file tables"
    define_variable_address(s)
    _define_open_files(s)
    s.add_from_import("drgn.helpers.linux.xarray", "xa_for_each")
    return """\
# A devmem TCP receiver holds niovs through tokens: a netmem_ref per token in
# its socket's sk_user_frags XArray (Linux 6.12+), until SO_DEVMEM_DONTNEED.
TOKEN_NIOVS = set()
socket_fops = variable_address("socket_file_ops")
for file in open_files() if socket_fops else ():
    if file.f_op.value_() != socket_fops:
        continue
    sk = Object(prog, "struct socket *", file.private_data).sk
    if sk and sk.sk_protocol.value_() == 6 and sk.__sk_common.skc_family.value_() in (2, 10):
        for _, netmem in xa_for_each(sk.sk_user_frags.address_of_()):
            TOKEN_NIOVS.add(netmem.value_() & ~1)"""


def define_niov_states(s: Snippet) -> None:
    """``niov_states(area)``: each niov of an area and what it is doing."""
    define_pool_places(s)
    define_niov_desc(s)
    s.define(
        "niov_states",
        '''
        NIOV_SIZE = sizeof(prog.type("struct net_iov"))
        $token_niovs


        def niov_states(area):
            """
            (span, index, struct net_iov *, state) of each niov of an area: in a
            pool's alloc "cache" or "ring", "free" (with its provider), held by
            "user" space (zcrx user_refs, devmem TCP tokens), or else by the
            "stack" (driver rx rings, skbs, sockets).
            """
            in_pools = {}
            for pool in for_each_pool():
                if pool.user.id.value_() in area["pools"]:
                    for netmem, where in pool_places(pool).items():
                        if netmem & 1:  # NET_IOV
                            in_pools[netmem & ~1] = where
            for span in area["spans"]:
                for i in range(span["count"]):
                    address = span["niovs"] + i * NIOV_SIZE
                    if address in in_pools:
                        state = in_pools[address]
                    elif i in span["free"]:
                        state = "free"
                    elif span["user_refs"] and span["user_refs"][i]:
                        state = "user"
                    elif area["kind"] == "dmabuf" and address in TOKEN_NIOVS:
                        state = "user"
                    else:
                        state = "stack"
                    yield span, i, Object(prog, "struct net_iov *", address), state
        ''',
        [("drgn", "Object"), ("drgn", "sizeof")],
        token_niovs=_token_niovs(s),
    )


def _without_providers(s: Snippet) -> bool:
    """Whether the kernel predates memory providers (then the script says so)."""
    if has_type(s.prog, "struct net_iov"):
        return False
    s.main("# No struct net_iov before Linux 6.12 (devmem TCP): no memory providers.")
    return True


def _ring_addresses(prog: Program, rings: Sequence[str]) -> Sequence[int]:
    """``--ring`` addresses, refused as the command refuses them."""
    out = []
    for text in rings:
        try:
            out.append(int(text, 0))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an address", param_hint="--ring") from None
    if out and not (
        has_member(prog, "struct io_ring_ctx", "zcrx_ctxs")
        or has_member(prog, "struct io_ring_ctx", "ifq")
    ):
        raise click.BadParameter(
            "this kernel's io_uring rings have no zcrx ifqs", param_hint="--ring"
        )
    return out


def _options(rings: Sequence[int], scan_files: bool) -> str:
    return "".join(f" --ring {r:#x}" for r in rings) + ("" if scan_files else " --no-scan-files")


def providers_code(
    prog: Program,
    rings: Sequence[str] = (),
    scan_files: bool = True,
    table: Optional[Table] = None,
    **_: object,
) -> str:
    """drgn code for ``providers``."""
    addresses = _ring_addresses(prog, rings)
    s = Snippet(
        prog,
        "netmem-probe providers" + _options(addresses, scan_files) + sort_option(table),
        "devmem dma-buf bindings and io_uring zcrx areas, and what their niovs do",
    )
    if _without_providers(s):
        return s.get()
    sort = define_sort_key(s, table, KEYS["providers"])
    define_areas(s, addresses, scan_files)
    define_niov_states(s)
    s.main(
        """
        rows = []
        for area in areas():
            counts = {"free": 0, "in-pool": 0, "stack": 0, "user": 0}
            for _, _, _, state in niov_states(area):
                counts["in-pool" if state in ("cache", "ring") else state] += 1
            row = {key: area[key] for key in ("kind", "id", "area", "address", "netdev",
                                              "queues", "pools")}
            row["niovs"] = sum(span["count"] for span in area["spans"])
            row.update(counts)
            rows.append(row)
        $sort
        for row in rows:
            print(json.dumps(row))
        """,
        sort="rows.sort(key=sort_key)" if sort else "",
    )
    return s.get()


def _area_test(area_key: Optional[str], pool_id: Optional[int]) -> str:
    """The condition an area must meet for ``--area`` or else ``--pool``."""
    if area_key is None:
        return f'{pool_id} in area["pools"]'
    kind, _, value = area_key.rpartition(":")
    try:
        number = int(value, 0)
    except ValueError:
        raise click.BadParameter(
            f"{area_key!r} is not dmabuf:ID, io_uring:ID or an address", param_hint="--area"
        ) from None
    test = f'area["kind"] == "{kind}" and ' if kind else ""
    if value.lower().startswith("0x"):
        test += (
            f'({number:#x} == int(area["address"], 16)\n'
            f'        or any(span["owner"] == {number:#x} for span in area["spans"]))'
        )
    else:
        test += f'area["id"] == {number}'
    return test


def niovs_code(
    prog: Program,
    area_key: Optional[str] = None,
    pool_id: Optional[int] = None,
    states: Sequence[str] = (),
    rings: Sequence[str] = (),
    scan_files: bool = True,
    table: Optional[Table] = None,
    **_: object,
) -> str:
    """drgn code for ``niovs`` with its selection."""
    if area_key is not None and pool_id is not None:
        raise click.UsageError("--area and --pool are mutually exclusive")
    addresses = _ring_addresses(prog, rings)
    options = "".join(
        [
            f" --area {area_key}" if area_key else "",
            f" --pool {pool_id}" if pool_id is not None else "",
            "".join(f" --state {state}" for state in states),
            _options(addresses, scan_files),
            sort_option(table),
        ]
    )
    s = Snippet(prog, "netmem-probe niovs" + options, "every net_iov of the provider areas")
    if _without_providers(s):
        return s.get()
    sort = define_sort_key(s, table, KEYS["niovs"])
    define_areas(s, addresses, scan_files)
    define_niov_states(s)
    selection = area_key is not None or pool_id is not None
    if selection:
        what = f"--area {area_key}" if area_key is not None else f"--pool {pool_id}"
        s.define(
            "selected",
            '''
            def selected(area):
                """$what"""
                return $test
            ''',
            what=what,
            test=_area_test(area_key, pool_id),
        )
    state_test = ""
    if states:
        state_test = (
            f"if state not in {py_strings(dict.fromkeys(states))}:  # --state\n    continue"
        )
    ambiguous = ""
    if area_key is not None and not area_key.rpartition(":")[2].lower().startswith("0x"):
        ambiguous = f"""
            if len(chosen) > 1:
                # zcrx area ids count from 0 in each ifq: an id alone may name several.
                names = ", ".join(area["area"] + " (" + (area["netdev"] or "no netdev") + ")"
                                  for area in chosen)
                raise SystemExit(f"{area_key} names {{len(chosen)}} areas: {{names}}; "
                                 "name one by its address")
            """
    s.main(
        """
        chosen = $areas
        $ambiguous
        POOL_IDS = {pool.value_(): pool.user.id.value_() for pool in for_each_pool()}
        for area in chosen:
            rows = []
            for span, i, niov, state in niov_states(area):
                $state_test
                pool = desc(niov).pp.value_()
                rows.append({
                    "area": area["area"], "kind": area["kind"], "chunk": span["chunk"],
                    "index": i, "net-iov": hex(niov.value_()), "netmem": hex(niov.value_() | 1),
                    "state": state, "pool-id": POOL_IDS.get(pool) if pool else None,
                    "pp-ref-count": desc(niov).pp_ref_count.counter.value_(),
                    "user-refs": span["user_refs"][i] if span["user_refs"] is not None else None,
                    "dma-addr": hex(desc(niov).dma_addr.value_()),
                    # Offset in the dma-buf, or in the zcrx area as user space sees it.
                    "offset": span["base"] + (i << area["shift"]),
                })
            $sort
            for row in rows:
                print(json.dumps(row))
        """,
        state_test=state_test,
        sort="rows.sort(key=sort_key)  # in each area" if sort else "",
        areas="[area for area in areas() if selected(area)]" if selection else "areas()",
        ambiguous=ambiguous,
    )
    return s.get()

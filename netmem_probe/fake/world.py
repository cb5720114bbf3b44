"""
Fake kernel worlds: kernel objects laid out in fake memory, read by real drgn.

A :class:`World` starts from a layout's types ELF (real kernel offsets, see
``layouts/``) and builds what a kernel would have built: network namespaces
and their netdevs, page pools in the ``page_pools`` XArray, struct pages in a
vmemmap, per-CPU data, clocks.  Each object is a :class:`KObject` (an address,
a C type and a value dict); values are serialised by drgn itself
(``Object(prog, type, value=...).to_bytes_()``), so the same scenario code runs
on every layout.  Linked structures (lists, hlists, XArrays) are described in
Python and wired into the values at :meth:`World.commit`.

The world also records the truth of what it built (``expected``), from the
scenario description, never by reading memory back.
"""

from typing import Any, Callable, Dict, List, Optional

import drgn
from drgn import Object, Program

from netmem_probe.fake.machine import Machine
from netmem_probe.fake.memory import FakeMemory, ReadFn, Region
from netmem_probe.fake.net import NetNamespace
from netmem_probe.fake.objects import (
    HEAP_PA,
    HEAP_SIZE,
    INIT_NET_INUM,
    PERCPU_DYNAMIC,
    PERCPU_UNIT,
    RAM_SIZE,
    SECTION_FLAGS,
    SECTION_SIZE_BITS,
    TIMER_ENTRY_STATIC,
    FakeList,
    FakeXArray,
    KObject,
)
from netmem_probe.fake.pools import PP_FLAG_SYSTEM_POOL, FakePagePool
from netmem_probe.fake.queues import FakeCpuQueues
from netmem_probe.fake.types_elf import build_types_elf, layout_header, layout_machine

__all__ = ("World",)


class World:
    """
    A fake kernel built in memory, readable by drgn as a live-like Program or
    written out as a vmcore stub.

    :param layout: layout name (``linux-7.3``, see ``available_layouts()``).
    :param nr_cpus: possible CPUs.
    :param boottime: seconds since boot at the moment of the "dump".
    :param ram_size: simulated RAM, whole 128 MiB memory sections.  Beyond
        the first section, struct pages are not stored: ``memmap_fn(offset,
        count)`` generates the memmap bytes from the first pfn past that
        section on (zeros without it), so a benchmark can have a huge memmap.

    The layout names the machine (``world.machine``): x86-64, or arm64 with
    4 or 16 KiB pages; page frame numbers, the direct map, the vmemmap and
    the kernel's VMCOREINFO follow it.
    """

    def __init__(
        self,
        layout: str = "linux-7.3",
        *,
        nr_cpus: int = 2,
        boottime: float = 86400.0,
        osrelease: Optional[str] = None,
        heap_size: int = HEAP_SIZE,
        ram_size: int = RAM_SIZE,
        memmap_fn: Optional[ReadFn] = None,
    ) -> None:
        if ram_size < RAM_SIZE or ram_size % RAM_SIZE:
            raise ValueError(f"ram_size must be a multiple of {RAM_SIZE:#x}")
        self.ram_size = ram_size
        self.memmap_fn = memmap_fn
        self.layout = layout
        self.machine: Machine = layout_machine(layout)
        self.page_shift = self.machine.page_shift
        self.page_size = self.machine.page_size
        self.types_elf = build_types_elf(layout)
        self.nr_cpus = nr_cpus
        self.boottime_ns = int(boottime * 1e9)
        version = layout_header(layout).stem.split("-", 1)[1]
        suffix = ""
        if "-arm64" in version:  # linux-7.3-arm64-16k: 7.3.0-netmem-fixture-arm64-16k
            version, suffix = version.split("-arm64", 1)
            suffix = "-arm64" + suffix
        self.osrelease = osrelease or f"{version}.0-netmem-fixture{suffix}"
        self.objects: List[KObject] = []
        self.wirings: List[Any] = []
        self.expected: Dict[str, Any] = {}
        self.mem = FakeMemory()
        self.heap_size = heap_size
        self.prog = self._make_program()
        self._types: Dict[str, drgn.Type] = {}
        self._next_pfn = (self.machine.ram_base + HEAP_PA + self.heap_size) >> self.page_shift
        self._percpu_next = PERCPU_DYNAMIC
        self._inum = INIT_NET_INUM
        self._globals: Dict[str, KObject] = {}
        self._commit_hooks: List[Callable[[], None]] = []
        self.skb_caches: Optional[Any] = None  # fake.slab.SkbCaches, on the first skb
        self._setup_kernel()

    # -- program and memory ------------------------------------------------

    def vmcoreinfo(self) -> str:
        machine = self.machine
        lines = [
            f"OSRELEASE={self.osrelease}",
            f"PAGESIZE={self.page_size}",
            f"SYMBOL(swapper_pg_dir)={machine.swapper_pg_dir:x}",
            "KERNELOFFSET=0",
            *machine.vmcoreinfo(),
            f"SYMBOL(mem_section)={self.prog_symbol('mem_section'):x}",
            f"LENGTH(mem_section)={self._nr_section_roots()}",
            f"SIZE(mem_section)={self.mem_section_size}",
            "OFFSET(mem_section.section_mem_map)=0",
            f"NUMBER(SECTION_SIZE_BITS)={SECTION_SIZE_BITS}",
            f"NUMBER(MAX_PHYSMEM_BITS)={machine.max_physmem_bits}",
        ]
        lines += [
            f"SYMBOL({name})={self.prog_symbol(name):x}"
            for name in ("vmemmap_base", "page_offset_base")
            if self.has_symbol(name)
        ]
        lines.append(f"BUILD-ID={self.build_id}")
        return "".join(line + "\n" for line in lines) + self._slab_vmcoreinfo()

    def _slab_vmcoreinfo(self) -> str:
        """The slab page type, as the kernel exports it for drgn's PageSlab()."""
        value = self.slab_mapcount_value
        return f"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)={value}\n" if value is not None else ""

    def _nr_section_roots(self) -> int:
        sections = 1 << (self.machine.max_physmem_bits - SECTION_SIZE_BITS)
        return sections // self._sections_per_root()

    def _sections_per_root(self) -> int:
        return self.page_size // self.mem_section_size  # SECTIONS_PER_ROOT

    def prog_symbol(self, name: str) -> int:
        return self._symbols[name]

    def _make_program(self) -> Program:
        # A bare Program to learn the global addresses for VMCOREINFO.
        machine = self.machine
        scout = Program(machine.platform)
        scout_module = scout.extra_module("types", create=True)
        scout_module.try_file(str(self.types_elf), force=True)
        self.build_id = scout_module.build_id.hex()
        self._symbols = {s.name: s.address for s in scout.symbols()}
        self.mem_section_size = drgn.sizeof(scout.type("struct mem_section"))
        # Since Linux kernel commit 46df8e73a4a3 ("mm: free up PG_slab") (in
        # v6.10), a slab page is a page type; VMCOREINFO gives its mapcount.
        try:
            pgty_slab = scout.constant("PGTY_slab").value_()
            self.slab_mapcount_value: Optional[int] = (pgty_slab << 24) - (1 << 32)
        except LookupError:
            self.slab_mapcount_value = None
        data_end = max(
            s.address + s.size for s in scout.symbols() if s.address >= machine.kernel_data
        )
        prog = Program(machine.platform)
        prog.set_linux_kernel_custom(self.vmcoreinfo().encode(), False)
        prog.main_module("kernel", create=True).try_file(str(self.types_elf), force=True)
        page = self.page_size
        image = machine.kimage_voffset
        data_size = -(-(data_end - machine.kernel_data) // page) * page
        self.kernel_data = self.mem.add(
            Region("kernel-data", machine.kernel_data, machine.kernel_data - image, data_size)
        )
        # swapper_pg_dir and, on arm64, the next level of the page tables
        tables = 1 if machine.arch == "x86_64" else 2
        self.page_tables = self.mem.add(
            Region(
                "swapper_pg_dir",
                machine.swapper_pg_dir,
                machine.swapper_pg_dir - image,
                tables * page,
            )
        )
        ram = machine.ram_base
        direct = machine.direct_map_offset
        heap_pa = ram + HEAP_PA
        frames = heap_pa + self.heap_size
        memmap_pa = ram + self.memmap_offset
        self.heap = self.mem.add(Region("heap", direct + heap_pa, heap_pa, self.heap_size))
        self.frames = self.mem.add(
            Region("page-frames", direct + frames, frames, memmap_pa - frames)
        )
        first_pfn = ram >> self.page_shift
        self.memmap = self.mem.add(
            Region(
                "vmemmap",
                machine.vmemmap + first_pfn * 64,
                memmap_pa,
                (RAM_SIZE >> self.page_shift) * 64,
            )
        )
        if self.ram_size > RAM_SIZE:
            size = ((self.ram_size - RAM_SIZE) >> self.page_shift) * 64
            self.mem.add(
                Region(
                    "vmemmap-generated",
                    self.memmap.end,
                    ram + RAM_SIZE,
                    size,
                    read_fn=self.memmap_fn or (lambda offset, count: bytes(count)),
                )
            )
        self.mem.attach(prog)
        return prog

    # -- types and objects -------------------------------------------------

    def type(self, name: str) -> drgn.Type:
        try:
            return self._types[name]
        except KeyError:
            t = self._types[name] = self.prog.type(name)
            return t

    def has_type(self, name: str) -> bool:
        try:
            self.type(name)
            return True
        except LookupError:
            return False

    def has_member(self, type_name: str, path: str) -> bool:
        try:
            drgn.offsetof(self.type(type_name), path)
            return True
        except (LookupError, ValueError):
            return False

    def has_constant(self, name: str) -> bool:
        try:
            self.prog.constant(name)
            return True
        except LookupError:
            return False

    def alloc(
        self,
        type_name: str,
        value: Any = None,
        *,
        align: int = 64,
        count: Optional[int] = None,
        region: Optional[Region] = None,
    ) -> KObject:
        """Allocate a ``type_name`` (or an array of ``count`` of them) in the heap."""
        type_ = self.type(type_name)
        if count is not None:
            type_ = self.prog.array_type(type_, count)
        addr = (region or self.heap).alloc(drgn.sizeof(type_), align)
        obj = KObject(self, addr, type_, value)
        self.objects.append(obj)
        return obj

    def at(self, addr: int, type_name: str, value: Any = None) -> KObject:
        """A KObject at a fixed address (a global, a struct page)."""
        obj = KObject(self, addr, self.type(type_name), value)
        self.objects.append(obj)
        return obj

    def global_(self, name: str) -> KObject:
        """The KObject of a global variable, created on first use."""
        try:
            return self._globals[name]
        except KeyError:
            var = self.prog[name]
            obj = self._globals[name] = KObject(self, var.address_, var.type_)
            self.objects.append(obj)
            return obj

    def string(self, text: str) -> int:
        raw = text.encode() + b"\0"
        addr = self.heap.alloc(len(raw), 8)
        self.mem.write(addr, raw)
        return addr

    def percpu_alloc(self, type_name: str) -> int:
        """Allocate per-CPU data; returns the __percpu address (an offset)."""
        size = drgn.sizeof(self.type(type_name))
        addr = -(-self._percpu_next // 64) * 64
        self._percpu_next = addr + size
        if self._percpu_next > PERCPU_UNIT:
            raise MemoryError("fake per-CPU area is full")
        return addr

    def per_cpu(self, percpu_addr: int, cpu: int, type_name: str, value: Any = None) -> KObject:
        """The KObject of one CPU's copy of per-CPU data."""
        return self.at(self.percpu_base[cpu] + percpu_addr, type_name, value)

    def xarray(self, owner: KObject, path: str) -> FakeXArray:
        xa = FakeXArray(owner, path)
        self.wirings.append(xa)
        return xa

    def list(self, head: KObject, path: str, *, hlist: bool = False) -> FakeList:
        lst = FakeList(head, path, hlist)
        self.wirings.append(lst)
        return lst

    @property
    def memmap_offset(self) -> int:
        """Where in the first section of RAM the stored memmap lies."""
        return RAM_SIZE - (RAM_SIZE >> self.page_shift) * 64

    def alloc_pfn(self, order: int = 0) -> int:
        """A free page frame number for a page (or 2**order pages)."""
        pfn = -(-self._next_pfn // (1 << order)) * (1 << order)
        self._next_pfn = pfn + (1 << order)
        if self._next_pfn > (self.machine.ram_base + self.memmap_offset) >> self.page_shift:
            raise MemoryError("fake page frames exhausted")
        return pfn

    def page_struct_addr(self, pfn: int) -> int:
        return self.machine.vmemmap + pfn * 64

    def page_virt(self, pfn: int) -> int:
        return self.machine.direct_map_offset + (pfn << self.page_shift)

    def struct_page(self, pfn: int, value: Any = None) -> KObject:
        return self.at(self.page_struct_addr(pfn), "struct page", value)

    # -- the kernel's own setup --------------------------------------------

    def _setup_kernel(self) -> None:
        machine = self.machine
        page = self.page_size
        # x86-64: drgn takes the direct map and the vmemmap base from these
        for name, value in (
            ("page_offset_base", machine.page_offset),
            ("vmemmap_base", machine.vmemmap),
        ):
            if self.has_symbol(name):
                self.global_(name).value = value
        # drgn's in_direct_map() (slab_object_info()) takes the direct map to
        # span these pfns: RAM's first and last
        for name, pfn in (
            ("min_low_pfn", machine.ram_base >> self.page_shift),
            ("max_low_pfn", ((machine.ram_base + self.ram_size) >> self.page_shift) - 1),
        ):
            if self.has_symbol(name):
                self.global_(name).value = pfn
        if machine.arch == "aarch64":
            self._setup_page_tables()
        timer = self.global_("poll_spurious_irq_timer")
        timer.set("entry.next", TIMER_ENTRY_STATIC)

        roots = self.alloc("struct mem_section *", count=self._nr_section_roots(), align=page)
        first = machine.ram_base >> SECTION_SIZE_BITS
        last = first + (self.ram_size >> SECTION_SIZE_BITS) - 1
        per_root = self._sections_per_root()
        present = {"section_mem_map": machine.vmemmap | SECTION_FLAGS}
        roots.value = []
        for root in range(last // per_root + 1):
            numbers = range(root * per_root, (root + 1) * per_root)
            if first > numbers[-1]:
                roots.value.append(0)
                continue
            sections = self.alloc("struct mem_section", count=per_root, align=page)
            sections.value = [present if first <= n <= last else {} for n in numbers if n <= last]
            roots.value.append(sections.addr)
        self.global_("mem_section").value = roots.addr
        self.global_("__highest_present_section_nr").value = last

        cpus = (1 << self.nr_cpus) - 1
        self.global_("nr_cpu_ids").value = self.nr_cpus
        for mask in ("__cpu_possible_mask", "__cpu_online_mask"):
            self.global_(mask).value = {"bits": [cpus]}
        self.percpu_base = [self.heap.alloc(PERCPU_UNIT, page) for _ in range(self.nr_cpus)]
        self.global_("__per_cpu_offset").value = list(self.percpu_base)

        self._setup_clock()
        self._setup_net()
        # The process list (init_task.tasks), for layouts with task types.
        self.tasks: Optional[FakeList] = None
        if self.has_type("struct task_struct"):
            self.tasks = self.list(self.global_("init_task"), "tasks")

    def _setup_page_tables(self) -> None:
        """
        arm64's swapper_pg_dir mapping RAM in the direct map with block
        entries, and saved_command_line in it: drgn finds the direct map
        offset by translating that string's address through these tables.
        """
        machine = self.machine
        shift = self.page_shift
        bits = shift - 3  # table index bits per level
        levels = (machine.va_bits_actual - shift + bits - 1) // bits
        top_shift = shift + bits * (levels - 1)
        block_shift = top_shift - bits
        top, table = self.page_tables.va, self.page_tables.va + self.page_size
        top_index = (machine.page_offset >> top_shift) & ((1 << bits) - 1)
        table_pa = table - machine.kimage_voffset
        self.mem.write(top + 8 * top_index, (table_pa | 0x3).to_bytes(8, "little"))
        block = 1 << block_shift
        ram = machine.ram_base
        for pa in range(ram - ram % block, ram + self.ram_size, block):
            index = ((machine.direct_map_offset + pa) >> block_shift) & ((1 << bits) - 1)
            # a block descriptor: valid, access flag
            self.mem.write(table + 8 * index, (pa | 0x401).to_bytes(8, "little"))
        if self.has_symbol("saved_command_line"):
            self.global_("saved_command_line").value = self.string("console=ttyAMA0")

    def _setup_clock(self) -> None:
        value = {
            "timekeeper": {
                "tkr_mono": {"base": self.boottime_ns, "xtime_nsec": 0, "shift": 0},
                "ktime_sec": self.boottime_ns // 10**9,
                "offs_boot": 0,
            }
        }
        # Since Linux kernel commit 22c62b9a84b8 ("timekeeping: Introduce
        # auxiliary timekeepers") (in v6.17), tk_core is timekeeper_data[0].
        name = "timekeeper_data" if self.has_symbol("timekeeper_data") else "tk_core"
        tk = self.global_(name)
        tk.value = [value] if name == "timekeeper_data" else value

    def has_symbol(self, name: str) -> bool:
        return name in self._symbols

    def _setup_net(self) -> None:
        self.has_dma_index = self.has_member("struct page_pool", "dma_mapped")
        self.netpp_page_type = self.has_constant("PGTY_netpp")
        # The page_pools registry (and pool ids, netdev hlists, pool->user)
        # came with Linux kernel commit f17c69649c69 ("net: page_pool: id the
        # page pools") (in v6.8).
        self.has_registry = self.has_symbol("page_pools")
        # pp_frag_count until Linux kernel commit "page_pool:
        # Rename pp_frag_count to pp_ref_count" (in v6.8)
        self.pp_ref_count_member = (
            "pp_ref_count" if self.has_member("struct page", "pp_ref_count") else "pp_frag_count"
        )
        self._timer_bucket = 0
        self.page_pools_xa = (
            self.xarray(self.global_("page_pools"), "") if self.has_registry else None
        )
        self.namespaces: List[NetNamespace] = []
        self.netns_list = self.list(self.global_("net_namespace_list"), "")
        self.init_net = NetNamespace(self, "init_net", self.global_("init_net"))
        self.pools: List[FakePagePool] = []
        self._next_pool_id = 1
        self.system_pools = (
            [self._system_pool(cpu) for cpu in range(self.nr_cpus)]
            if self.has_symbol("system_page_pool")
            else []
        )
        # Every CPU's backlog, NAPI skb cache and skb defer lists, for
        # layouts with softnet_data.
        self.cpu_queues = FakeCpuQueues(self) if self.has_symbol("softnet_data") else None

    def _system_pool(self, cpu: int) -> FakePagePool:
        """The per-CPU system page pool that net_page_pool_create() makes at boot."""
        pool = FakePagePool(
            self, pool_size=(1 << 20) // self.page_size, nid=0, cpuid=cpu, flags=PP_FLAG_SYSTEM_POOL
        )
        # Since the Linux kernel commit "xdp: Use nested-BH locking for
        # system_page_pool" (in v6.16) the per-CPU variable is a struct
        # page_pool_bh; before, a bare pointer.
        per_cpu_var = self.prog["system_page_pool"]
        value: Any = pool.obj.addr
        if per_cpu_var.type_.unaliased_kind() == drgn.TypeKind.STRUCT:
            value = {"pool": pool.obj.addr}
        self.at(self.percpu_base[cpu] + per_cpu_var.address_, per_cpu_var.type_.type_name(), value)
        return pool

    @property
    def timer_bucket(self) -> int:
        """A timer wheel bucket, for armed timers' ``entry.pprev`` (made on first use)."""
        if not self._timer_bucket:
            self._timer_bucket = self.alloc("struct hlist_head").addr
        return self._timer_bucket

    def next_inum(self) -> int:
        self._inum += 1 if self._inum != INIT_NET_INUM else 0x2E1
        return self._inum

    # -- output ------------------------------------------------------------

    def commit(self) -> None:
        """Wire linked structures and write every object into memory."""
        for hook in self._commit_hooks:
            hook()
        for wiring in self.wirings:
            if isinstance(wiring, FakeXArray):
                wiring.wire(self)
            else:
                wiring.wire()
        for obj in self.objects:
            data = Object(self.prog, obj.type, value=obj.value).to_bytes_()
            self.mem.write(obj.addr, data)

    def before_commit(self, hook: Callable[[], None]) -> None:
        self._commit_hooks.append(hook)

    def findable_pools(self) -> List["FakePagePool"]:
        """
        The pools a correct tool finds: every pool of the registry; without
        one, the pools that some page names (no slab or owner structures
        are modelled), in address order.
        """
        if self.has_registry:
            return sorted(self.pools, key=lambda p: p.id or 0)
        return sorted((p for p in self.pools if p.pages), key=lambda p: p.obj.addr)

    def expected_pools(self) -> List[Dict[str, Any]]:
        return [pool.expected() for pool in self.findable_pools()]

    def expected_all(self) -> Dict[str, Any]:
        """Everything the world knows it built, for ``expected.json``."""
        details = {p.key: p.expected_details() for p in self.findable_pools()}
        return {"pools": self.expected_pools(), "pool-details": details, **self.expected}

    def program(self) -> Program:
        """Commit and return the drgn Program over this world's memory."""
        self.commit()
        return self.prog

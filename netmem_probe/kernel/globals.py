"""
The C type of each kernel global variable netmem-probe (and the drgn helpers
it calls) reads.

DWARF describes every global; the kernel's BTF describes only per-CPU ones
(pahole emits a ``VAR`` for ``.data..percpu`` alone), and a BTF-derived ELF
none at all.  Where the type information has no variable, the type comes from
here: the BTF object finder (:mod:`netmem_probe.kallsyms_btf`) pairs it with
the symbol's kallsyms address, and ``scripts/layouts/gen_layout_header.py``
declares the globals of a fixture with it.
"""

import re
from typing import Dict, List, Optional, Sequence, Union

import drgn
from drgn import Program, TypeMember

__all__ = ("GLOBAL_TYPES", "global_type")

# Spellings for drgn's type parser, the first one this kernel has winning.
# NR_CPUS and TIMEKEEPERS_MAX are replaced by the kernel's values; an
# anonymous "struct { TYPE NAME; ... }" is laid out by the C rules.
GLOBAL_TYPES: Dict[str, Union[str, Sequence[str]]] = {
    # page pools and memory providers
    "page_pools": "struct xarray",
    # a struct page_pool_bh holding the pointer since Linux v6.16
    "system_page_pool": ("struct page_pool_bh", "struct page_pool *"),
    "pp_system_recycle_stats": "struct page_pool_recycle_stats",
    "net_devmem_dmabuf_bindings": "struct xarray",
    "dmabuf_devmem_ops": "const struct memory_provider_ops",
    "io_uring_pp_zc_ops": "const struct memory_provider_ops",
    "io_uring_fops": "const struct file_operations",
    "zcrx_box_fops": "const struct file_operations",
    # the netlink socket that bound a devmem binding (kernel/devmem.py)
    "netdev_nl_family": "struct genl_family",
    # the processes holding a socket open (kernel/actors.py)
    "socket_file_ops": "const struct file_operations",
    # namespaces, tasks
    "init_net": "struct net",
    "net_namespace_list": "struct list_head",
    "init_pid_ns": "struct pid_namespace",
    "init_task": "struct task_struct",
    # the skb slab caches: in struct net_hotdata since Linux v6.10, before
    # that globals (the variable skbuff_head_cache became skbuff_cache in
    # "net: skbuff: drop the word head from skb cache", net-next February 2023)
    "net_hotdata": "struct net_hotdata",
    "skbuff_cache": "struct kmem_cache *",
    "skbuff_head_cache": "struct kmem_cache *",
    "skbuff_fclone_cache": "struct kmem_cache *",
    # memory model: drgn derives vmemmap from mem_section, and the direct
    # map from page_offset_base on x86-64; on other architectures (arm64)
    # from the page tables' mapping of saved_command_line's string
    "mem_section": "struct mem_section **",
    "__highest_present_section_nr": "unsigned long",
    "vmemmap_base": "unsigned long",
    "page_offset_base": "unsigned long",
    "saved_command_line": "char *",
    # identify_address() (holders' unknown referrers): the direct map, slab
    # caches, vmalloc areas (per-node lists since Linux v6.9), task stacks
    "min_low_pfn": "unsigned long",
    "max_low_pfn": "unsigned long",
    "slab_caches": "struct list_head",
    "init_mm": "struct mm_struct",
    "vmap_area_root": "struct rb_root",
    "vmap_area_list": "struct list_head",
    "vmap_nodes": "struct vmap_node *",
    "nr_vmap_nodes": "unsigned int",
    "vmap_zone_size": "unsigned long",
    "task_struct_cachep": "struct kmem_cache *",
    "thread_stack_cache": "struct kmem_cache *",
    "modules": "struct list_head",  # module symbols, for the same
    # CPUs: NR_CPUS is the bit size of struct cpumask
    "__per_cpu_offset": "unsigned long [NR_CPUS]",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
    "nr_cpu_ids": "unsigned int",
    # POISON_POINTER_DELTA, from a statically initialised timer
    "poll_spurious_irq_timer": "struct timer_list",
    # clocks: since Linux kernel commit 22c62b9a84b8 ("timekeeping:
    # Introduce auxiliary timekeepers") (in v6.17), tk_core is an element of
    # timekeeper_data[]; before struct tk_data (Linux 6.12 and older), its
    # type had no name
    "tk_core": (
        "struct tk_data",
        "struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }",
    ),
    "timekeeper_data": "struct tk_data [TIMEKEEPERS_MAX]",
    "jiffies_64": "u64",
    # the kernel log (drgn's get_printk_records()): the lockless ring buffer
    # since Linux kernel commit 896fbe20b4e2 ("printk: use the lockless
    # ringbuffer") (in v5.10)
    "prb": "struct printk_ringbuffer *",
}


def global_type(prog: Program, name: str) -> Optional[drgn.Type]:
    """
    The type of the kernel global ``name`` by :data:`GLOBAL_TYPES`, built
    from the program's types; None if the name is not in the table or the
    program has none of its spellings.
    """
    spellings = GLOBAL_TYPES.get(name)
    if spellings is None:
        return None
    for spelling in (spellings,) if isinstance(spellings, str) else spellings:
        try:
            if "NR_CPUS" in spelling:
                nr_cpus = drgn.sizeof(prog.type("struct cpumask")) * 8
                spelling = spelling.replace("NR_CPUS", str(nr_cpus))
            if "TIMEKEEPERS_MAX" in spelling:
                count = prog.constant("TIMEKEEPERS_MAX").value_()
                spelling = spelling.replace("TIMEKEEPERS_MAX", str(count))
            anonymous = _ANONYMOUS_STRUCT.fullmatch(spelling)
            if anonymous:
                return _anonymous_struct(prog, anonymous[1])
            return prog.type(spelling)
        except LookupError:
            continue
    return None


_ANONYMOUS_STRUCT = re.compile(r"struct \{(.*)\}")
_MEMBER = re.compile(r"\s*(.+?)\s+(\w+)\s*")


def _anonymous_struct(prog: Program, body: str) -> drgn.Type:
    """
    ``struct { body }`` with its members at the offsets a C compiler gives
    them (each at its alignment, the size a multiple of the largest); BTF,
    like C, has no name to look such a type up by.
    """
    members: List[TypeMember] = []
    offset, align = 0, 1
    for declaration in filter(str.strip, body.split(";")):
        match = _MEMBER.fullmatch(declaration)
        if match is None:
            raise ValueError(f"cannot lay out member {declaration.strip()!r}")
        type_ = prog.type(match[1])
        member_align = drgn.alignof(type_)
        offset = -(-offset // member_align) * member_align
        members.append(TypeMember(type_, match[2], offset * 8))
        offset += drgn.sizeof(type_)
        align = max(align, member_align)
    return prog.struct_type(None, -(-offset // align) * align, members)

"""What a fixture layout header keeps from a real kernel's types.

``STRUCTS`` maps a struct/union to the members kept (``ALL`` keeps every
member, recursively for anonymous members).  Named struct types reached by
value that are not listed become opaque blobs of the real size and alignment;
types reached only through pointers become forward declarations.  Every kept
member keeps its real offset: the generator pads the gaps and emits a
``_Static_assert`` per member, so gcc refuses a header that drifted.

``GLOBALS`` names the kernel variables a fixture defines, with the kernel
source file that defines them (fixtures compile one translation unit per file,
so ``prog.object(name, filename=...)`` behaves as on a real vmlinux).
"""

ALL = None

STRUCTS = {
    # memory: struct page and the network memory descriptors
    "struct page": ALL,
    "struct netmem_desc": ALL,
    "struct net_iov": ALL,
    "struct net_iov_area": ALL,
    "struct mem_section": ALL,
    "struct mem_section_usage": ALL,
    "struct cpumask": ALL,
    "struct list_head": ALL,
    "struct hlist_head": ALL,
    "struct hlist_node": ALL,
    "struct llist_node": ALL,
    "struct llist_head": ALL,
    "struct callback_head": ALL,
    "struct xarray": ALL,
    "struct xa_node": ALL,
    "struct refcount_struct": ALL,
    "struct timer_list": ["entry", "expires", "flags"],
    # a pool's deferred release (page_pool_release_retry) is a delayed work
    "struct delayed_work": ["timer"],
    # page pools
    "struct page_pool": ALL,
    # before Linux kernel commit 5027ec19f104 ("net: page_pool: split the
    # page_pool_params into fast and slow") (in v6.8), one struct
    "struct page_pool_params": ALL,
    "struct page_pool_params_fast": ALL,
    "struct page_pool_params_slow": ALL,
    "struct pp_alloc_cache": ALL,
    "struct ptr_ring": ALL,
    "struct page_pool_alloc_stats": ALL,
    "struct page_pool_recycle_stats": ALL,
    "struct page_pool_bh": ["pool"],
    "struct memory_provider_ops": ALL,
    "struct pp_memory_provider_params": ALL,
    # netdevs and namespaces
    "struct net_device": [
        "name",
        "dev_list",
        "ifindex",
        "flags",
        "reg_state",
        "rtnl_link_ops",
        "_rx",
        "num_rx_queues",
        "real_num_rx_queues",
        "nd_net",
        "dev",
        "page_pools",
        "napi_list",
        "_tx",
        "num_tx_queues",
        "qdisc",
        "qdisc_hash",
    ],
    "struct net": ["list", "dev_base_head", "loopback_dev", "ns", "ifindex"],
    "struct ns_common": ["inum"],
    "struct netdev_rx_queue": ["dev", "napi", "mp_params"],
    "struct napi_struct": ["dev_list", "dev", "napi_id", "index", "gro", "gro_hash", "rx_list"],
    "struct gro_node": ["hash", "rx_list"],
    "struct gro_list": ALL,
    "struct device": ["parent", "driver"],
    "struct device_driver": ["name"],
    "struct rtnl_link_ops": ["kind"],
    "possible_net_t": ALL,
    # devmem TCP
    "struct net_devmem_dmabuf_binding": ALL,
    "struct dmabuf_genpool_chunk_owner": ALL,
    "struct gen_pool": ["chunks", "min_alloc_order", "name"],
    "struct gen_pool_chunk": ALL,
    "struct dma_buf": ["size", "name"],
    "struct percpu_ref": ALL,
    # io_uring zero-copy receive
    "struct io_zcrx_area": ALL,
    "struct io_zcrx_ifq": ALL,
    "struct io_zcrx_mem": ALL,
    "struct zcrx_rq": ALL,
    # rings register zcrx ifqs in zcrx_ctxs (6.17+); device-less ifqs
    # (ZCRX_REG_NODEV) are reachable only that way
    "struct io_ring_ctx": ["zcrx_ctxs"],
    # skbs and sockets (holders)
    "struct sk_buff": [
        "next",
        "prev",
        "sk",
        "dev",
        "len",
        "data_len",
        "head_frag",
        "pp_recycle",
        "tail",
        "end",
        "head",
        "data",
        "truesize",
        "users",
        "rbnode",
        "list",
        "ll_node",
    ],
    "struct sk_buff_head": ALL,
    "struct sk_buff_fclones": ALL,
    # the skb slab caches (netmem_probe/kernel/skbs.py, drgn's slab helpers)
    "struct net_hotdata": [
        "skbuff_cache",
        "skbuff_fclone_cache",
        "skb_small_head_cache",
        "skb_defer_nodes",
    ],
    "struct kmem_cache": [
        "cpu_sheaves",
        "flags",
        "size",
        "object_size",
        "offset",
        "oo",
        "refcount",
        "red_left_pad",
        "name",
        "list",
        "per_node",
    ],
    "struct kmem_cache_per_node_ptrs": ALL,
    "struct kmem_cache_order_objects": ALL,
    "struct slab": ALL,
    "struct freelist_counters": ALL,
    "struct skb_shared_info": ["flags", "nr_frags", "frag_list", "dataref", "frags"],
    "struct skb_frag": ALL,
    # skb_frag_t before Linux v6.9 (frags[i].bv_page)
    "struct bio_vec": ALL,
    "struct sock_common": [
        "skc_daddr",
        "skc_rcv_saddr",
        "skc_dport",
        "skc_num",
        "skc_family",
        "skc_state",
        "skc_net",
        "skc_v6_daddr",
        "skc_v6_rcv_saddr",
    ],
    "struct sock": [
        "__sk_common",
        "sk_receive_queue",
        "sk_error_queue",
        "sk_backlog",
        "sk_protocol",
        # devmem TCP tokens (kernel/devmem.py)
        "sk_user_frags",
    ],
    # TCP's out-of-order queue (kernel/queues.py)
    "struct tcp_sock": ["inet_conn", "out_of_order_queue"],
    "struct inet_connection_sock": ["icsk_inet"],
    "struct inet_sock": ["sk"],
    "struct rb_root": ALL,
    # the netlink socket that bound a devmem binding (kernel/devmem.py): the
    # netdev family's per-socket private data, keyed by struct sock address
    "struct genl_family": ["sock_privs"],
    "struct netdev_nl_sock": ALL,
    # skbs waiting per CPU (kernel/softnet.py): the backlog, the completion
    # queue, the skb defer lists (in softnet_data before v6.18, per NUMA node
    # after) and the NAPI cache of freed skbs
    "struct softnet_data": ["process_queue", "completion_queue", "input_pkt_queue", "defer_list"],
    "struct skb_defer_node": ALL,
    "struct napi_alloc_cache": ["skb_count", "skb_cache"],
    # qdiscs (kernel/qdisc.py): every qdisc's own queues, pfifo_fast's bands,
    # fq_codel's flows and fq's
    "struct netdev_queue": ["qdisc", "qdisc_sleeping"],
    "struct Qdisc": [
        "ops",
        "hash",
        "handle",
        "gso_skb",
        "skb_bad_txq",
        "q",
        "defer_list",
        "privdata",
    ],
    "struct Qdisc_ops": ["id"],
    "struct qdisc_skb_head": ALL,
    "struct pfifo_fast_priv": ALL,
    "struct skb_array": ALL,
    "struct fq_codel_sched_data": ["flows", "flows_cnt"],
    "struct fq_codel_flow": ["head", "tail"],
    # sch_fq (sch_fq.ko): the internal flow and the flow trees, each flow a
    # list of skbs and an rbtree of skbs
    "struct fq_sched_data": ["fq_root", "fq_trees_log", "internal"],
    "struct fq_flow": ["t_root", "head", "tail", "fq_node", "band"],
    "struct rb_node": ALL,
    # processes and their sockets (kernel/actors.py)
    "struct task_struct": ["tasks", "tgid", "comm", "files", "nsproxy"],
    "struct nsproxy": ["net_ns"],
    "struct files_struct": ["fdt"],
    "struct fdtable": ["max_fds", "fd"],
    "struct file": ["f_op", "private_data"],
    "struct socket": ["sk"],
    "struct in6_addr": ALL,
    # driver rx rings (netmem_probe/kernel/drivers/): virtio_net and virtio_ring
    "struct virtnet_info": ["dev", "rq", "max_queue_pairs", "curr_queue_pairs"],
    "struct receive_queue": ["vq", "page_pool"],
    "struct virtqueue": ["index", "num_free"],
    "struct vring_virtqueue": ["vq", "packed_ring", "layout", "split", "packed"],
    "struct vring_virtqueue_split": ["vring", "desc_state"],
    "struct vring_virtqueue_packed": ["vring", "desc_state"],
    "struct vring": ["num"],
    "struct vring_desc_state_split": ["data"],
    "struct vring_desc_state_packed": ["data"],
    # veth
    "struct veth_priv": ["peer", "rq"],
    "struct veth_rq": ["dev", "xdp_ring", "page_pool"],
    # mlx5e (mlx5_core.ko): channels, each with an rq whose legacy (cyclic) or
    # striding (linked-list) WQEs hold pool pages in struct mlx5e_frag_page
    "struct mlx5e_priv": ["channels", "netdev"],
    "struct mlx5e_channels": ["c", "num"],
    "struct mlx5e_channel": ["rq", "netdev", "ix"],
    "struct mlx5e_rq": ["wqe", "mpwqe", "netdev", "ix", "page_pool", "xsk_pool", "wq_type"],
    "struct mlx5_wq_cyc": ["fbc", "sz", "wqe_ctr", "cur_sz"],
    "struct mlx5_wq_ll": ["fbc", "head", "wqe_ctr", "cur_sz"],
    "struct mlx5_frag_buf_ctrl": ["sz_m1", "log_sz"],
    "struct mlx5e_rq_frags_info": ["arr", "num_frags", "log_num_frags"],
    "struct mlx5e_wqe_frag_info": ALL,
    "struct mlx5e_frag_page": ALL,
    "union mlx5e_alloc_units": ALL,
    "struct mlx5e_mpw_info": ALL,
    # bnxt (bnxt_en.ko): per rx ring, the head buffers and the aggregation ring
    "struct bnxt": ["dev", "rx_ring", "rx_nr_rings", "rx_ring_mask", "rx_agg_ring_mask"],
    "struct bnxt_rx_ring_info": ["rx_buf_ring", "rx_agg_ring", "page_pool", "head_pool"],
    "struct bnxt_sw_rx_bd": ALL,
    "struct bnxt_sw_rx_agg_bd": ALL,
    # gve (gve.ko): DQO buffer states, in use when a state's next is its own id
    "struct gve_priv": ["dev", "rx", "rx_cfg", "queue_format"],
    "struct gve_rx_queue_config": ALL,
    "struct gve_rx_ring": ["dqo", "q_num"],
    "struct gve_rx_buf_state_dqo": ["page_info", "next"],
    "struct gve_rx_slot_page_info": ALL,
    # ice (ice.ko): libeth buffers (libeth.ko) posted in [next_to_clean, next_to_use)
    "struct ice_netdev_priv": ["vsi", "repr"],
    "struct ice_vsi": ["netdev", "rx_rings", "num_rxq"],
    "struct ice_rx_ring": [
        "pp",
        "netdev",
        "rx_fqes",
        "count",
        "hdr_pp",
        "hdr_fqes",
        "xsk_pool",
        "next_to_use",
        "next_to_clean",
        "q_index",
    ],
    "struct libeth_fqe": ALL,
    # idpf (idpf.ko), split queue model: each rx queue group's buffer queues
    # post libeth buffers; the rx queue zeroes a buffer's netmem as it takes it
    "struct idpf_netdev_priv": ["vport"],
    "struct idpf_vport": ["dflt_qv_rsrc", "netdev"],
    "struct idpf_q_vec_rsrc": ["num_rxq_grp", "rxq_model", "rxq_grps"],
    "struct idpf_rxq_group": ["splitq", "singleq"],
    "struct idpf_bufq_set": ["bufq"],
    "struct idpf_buf_queue": ["buf", "pp", "hdr_buf", "hdr_pp", "flags", "desc_count"],
    # the single queue model's rx queues post their own buffers (rx_buf, pp);
    # every rx queue keeps a frame it has not finished in its stash (xdp)
    "struct idpf_rxq_set": ["rxq"],
    "struct idpf_rx_queue": ["rx_buf", "pp", "flags", "idx", "desc_count", "xdp"],
    "struct libeth_xdp_buff_stash": ALL,
    # fbnic (fbnic.ko, built by scripts/layouts/build-fbnic): the rx queue's
    # completion ring fbn->rx[q] sits in a triad with its header (sub0) and
    # payload (sub1) page queues, whose rx_buf[] hold the posted pages
    "struct fbnic_net": ["rx", "netdev"],
    "struct fbnic_q_triad": ["sub0", "sub1", "cmpl"],
    "struct fbnic_ring": ["rx_buf", "size_mask", "q_idx", "head", "tail"],
    "struct fbnic_rx_buf": ALL,
    # the kernel log (drgn's get_printk_records(): the lockless ring buffer, v5.10+)
    "struct printk_ringbuffer": ["desc_ring", "text_data_ring", "fail"],
    "struct prb_desc_ring": ["count_bits", "descs", "infos", "head_id", "tail_id"],
    "struct prb_data_ring": ["size_bits", "data", "head_lpos", "tail_lpos"],
    "struct prb_desc": ALL,
    "struct prb_data_blk_lpos": ALL,
    "struct printk_info": ALL,
    "struct dev_printk_info": ALL,
    # clocks (detach ages are measured on CLOCK_BOOTTIME)
    "struct tk_data": ["seq", "timekeeper"],
    "struct timekeeper": [
        "tkr_mono",
        "ktime_sec",
        "offs_real",
        "offs_boot",
        "offs_tai",
        "coarse_nsec",
    ],
    "struct tk_read_base": ["base", "xtime_nsec", "shift"],
    "struct seqcount_raw_spinlock": ALL,
    "struct seqcount": ALL,
}

# Typedefs that drgn's helpers or netmem-probe name directly.
TYPEDEFS = [
    "time64_t",
    "phys_addr_t",
    "dma_addr_t",
    "netmem_ref",
    "atomic_long_t",
    "ktime_t",
    "size_t",
    "u32",
    "u16",
]

# Enumerations whose constants the tool looks up by name.
ENUMS = [
    "enum pagetype",
    # PG_slab: a slab page is a page flag before v6.10 (drgn's PageSlab())
    "enum pageflags",
    "enum net_iov_type",
    "enum dma_data_direction",
    "enum timekeeper_ids",
    "enum vq_layout",
    "enum virtchnl2_queue_model",
    "enum idpf_queue_flags_t",
    "enum xdp_buff_flags",
    "enum desc_state",
    "enum printk_info_flags",
    "enum mlx5e_wqe_frag_flag",
    "enum gve_queue_format",
]

# name -> kernel source file that defines it.
GLOBALS = {
    "page_pools": "net/core/page_pool_user.c",
    "init_task": "init/init_task.c",
    "socket_file_ops": "net/socket.c",
    "init_net": "net/core/net_namespace.c",
    "net_namespace_list": "net/core/net_namespace.c",
    "system_page_pool": "net/core/dev.c",
    "pp_system_recycle_stats": "net/core/page_pool.c",
    "net_devmem_dmabuf_bindings": "net/core/devmem.c",
    "netdev_nl_family": "net/core/netdev-genl-gen.c",
    "dmabuf_devmem_ops": "net/core/devmem.c",
    "io_uring_pp_zc_ops": "io_uring/zcrx.c",
    "io_uring_fops": "io_uring/io_uring.c",
    "mem_section": "mm/sparse.c",
    "__highest_present_section_nr": "mm/sparse.c",
    "vmemmap_base": "arch/x86/kernel/head64.c",
    "page_offset_base": "arch/x86/kernel/head64.c",
    "net_hotdata": "net/core/hotdata.c",
    # the skb slab caches before net_hotdata (v6.10); skbuff_head_cache was
    # renamed skbuff_cache in v6.4
    "skbuff_head_cache": "net/core/skbuff.c",
    "skbuff_fclone_cache": "net/core/skbuff.c",
    "slab_caches": "mm/slab_common.c",
    # drgn's slab_object_info() tells the direct map by them (in_direct_map())
    "min_low_pfn": "mm/memblock.c",
    "max_low_pfn": "mm/memblock.c",
    "saved_command_line": "init/main.c",
    "__per_cpu_offset": "arch/x86/kernel/setup_percpu.c",
    "__cpu_possible_mask": "kernel/cpu.c",
    "__cpu_online_mask": "kernel/cpu.c",
    "nr_cpu_ids": "kernel/smp.c",
    "poll_spurious_irq_timer": "kernel/irq/spurious.c",
    "tk_core": "kernel/time/timekeeping.c",
    "timekeeper_data": "kernel/time/timekeeping.c",
    "prb": "kernel/printk/printk.c",
    "softnet_data": "net/core/dev.c",
    "napi_alloc_cache": "net/core/skbuff.c",
}

# Globals of one architecture's kernels only: drgn reads the direct map and
# vmemmap bases of x86-64 from the first two; on arm64 it translates
# saved_command_line's address through the page tables.
ARCH_GLOBALS = {
    "vmemmap_base": "x86_64",
    "page_offset_base": "x86_64",
    "saved_command_line": "aarch64",
}
# Where a global is defined when it is not where x86-64 defines it.
ARCH_SOURCES = {"aarch64": {"__per_cpu_offset": "drivers/base/arch_numa.c"}}

# Per-CPU variables live in the .data..percpu section, linked at address 0 as
# in the kernel, so per_cpu_ptr() adds __per_cpu_offset[cpu] to them.
PERCPU_GLOBALS = {"system_page_pool", "pp_system_recycle_stats", "softnet_data", "napi_alloc_cache"}

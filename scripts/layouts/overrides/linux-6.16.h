/*
 * Linux v6.16: struct net_iov with its type first and a struct net_iov_area
 * owner, the six-op memory_provider_ops, and io_uring zero-copy receive with
 * one area per interface queue and the area memory split into struct
 * io_zcrx_mem.  Everything else comes from the Debian 6.12.y DWARF, whose
 * struct page_pool already has the 6.15 members (mp_ops, dma_mapped).
 *
 * Read through the source index (torvalds/linux blobs and the lists):
 * - include/net/netmem.h at commit 03e96b8c11d140fb4ead0b30c2d6e1a294b501ef
 *   (v6.16 state: type first, owner a struct net_iov_area *, no struct
 *   netmem_desc yet): enum net_iov_type, struct net_iov, struct net_iov_area.
 * - include/net/page_pool/memory_provider.h at commit
 *   1e91c98bc9a8ef8198e73151b2a118cd3748925d: struct memory_provider_ops.
 * - net/core/devmem.h: struct dmabuf_genpool_chunk_owner as commit
 *   7d60fa9e1ab1 ("net: generalise net_iov chunk owners") (in v6.15) made
 *   it; the same in 6.18 (BTF) and 7.3 (DWARF).
 * - io_uring/zcrx.h: no v6.16 blob is stored.  Rebuilt from the 6.15 blob at
 *   commit 5a17131a5dbd0ebca655bfb65fe3fe643ccc27f3 plus the patches that
 *   landed for v6.16, read as posted: "io_uring/zcrx: fix late dma unmap for
 *   a dead dev" (io_uring-6.15, ifq->dma_lock), "io_uring/zcrx: move zcrx
 *   region to struct io_zcrx_ifq" (ifq->region), "io_uring/zcrx: split out
 *   memory holders from area" (struct io_zcrx_mem) and "io_uring/zcrx:
 *   dmabuf backed zerocopy receive" (is_dmabuf, attach, dmabuf, sgt,
 *   dmabuf_offset).  The 6.16-stable review of commit 262ab205180d
 *   ("io_uring/zcrx: account area memory") shows v6.16's io_zcrx_mem as
 *   context (6.16.2+ add account_pages after nr_folios).  ifq->niov_shift
 *   and mem.page_sg_table came in v6.17.
 * - struct io_mapped_region (ifq->region, v6.13+; Debian 6.12 has none):
 *   include/linux/io_uring_types.h as "io_uring/memmap: add internal region
 *   flags" (posted 2024-11, v6.13) left it; 24 bytes as in 6.18 and 7.3.
 * ____cacheline_aligned_in_smp is 64-byte alignment on x86-64.
 */
enum net_iov_type {
	NET_IOV_DMABUF,
	NET_IOV_IOURING,

	/* Force size to unsigned long to make the NET_IOV_ASSERTS below pass.
	 */
	NET_IOV_MAX = ~0UL /* ULONG_MAX */
};

struct net_iov {
	enum net_iov_type type;
	unsigned long pp_magic;
	struct page_pool *pp;
	struct net_iov_area *owner;
	unsigned long dma_addr;
	atomic_long_t pp_ref_count;
};

struct net_iov_area {
	/* Array of net_iovs for this area. */
	struct net_iov *niovs;
	size_t num_niovs;

	/* Offset into the dma-buf where this chunk starts.  */
	unsigned long base_virtual;
};

struct dmabuf_genpool_chunk_owner {
	struct net_iov_area area;
	struct net_devmem_dmabuf_binding *binding;

	/* dma_addr of the start of the chunk.  */
	dma_addr_t base_dma_addr;
};

struct memory_provider_ops {
	netmem_ref (*alloc_netmems)(struct page_pool *pool, gfp_t gfp);
	bool (*release_netmem)(struct page_pool *pool, netmem_ref netmem);
	int (*init)(struct page_pool *pool);
	void (*destroy)(struct page_pool *pool);
	int (*nl_fill)(void *mp_priv, struct sk_buff *rsp,
		       struct netdev_rx_queue *rxq);
	void (*uninstall)(void *mp_priv, struct netdev_rx_queue *rxq);
};

struct io_mapped_region {
	struct page		**pages;
	void			*ptr;
	unsigned		nr_pages;
	unsigned		flags;
};

struct io_zcrx_mem {
	unsigned long			size;
	bool				is_dmabuf;

	struct page			**pages;
	unsigned long			nr_folios;

	struct dma_buf_attachment	*attach;
	struct dma_buf			*dmabuf;
	struct sg_table			*sgt;
	unsigned long			dmabuf_offset;
};

struct io_zcrx_area {
	struct net_iov_area	nia;
	struct io_zcrx_ifq	*ifq;
	atomic_t		*user_refs;

	bool			is_mapped;
	u16			area_id;

	/* freelist */
	spinlock_t		freelist_lock __attribute__((__aligned__(64)));
	u32			free_count;
	u32			*freelist;

	struct io_zcrx_mem	mem;
};

struct io_zcrx_ifq {
	struct io_ring_ctx		*ctx;
	struct io_zcrx_area		*area;

	spinlock_t			rq_lock __attribute__((__aligned__(64)));
	struct io_uring			*rq_ring;
	struct io_uring_zcrx_rqe	*rqes;
	u32				cached_rq_head;
	u32				rq_entries;

	u32				if_rxq;
	struct device			*dev;
	struct net_device		*netdev;
	netdevice_tracker		netdev_tracker;
	spinlock_t			lock;
	struct mutex			dma_lock;
	struct io_mapped_region		region;
};

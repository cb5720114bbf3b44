/*
 * Linux v6.6 (the 6.6 LTS line): no page-pool registry yet (the page_pools
 * XArray and pool->user came with commit f17c69649c69 "net: page_pool: id
 * the page pools" in v6.8), no netmem; everything else comes from the
 * Debian 6.1.y DWARF (vmlinux and veth.ko), whose struct page already has
 * the v6.6 pp fields: pp_magic, pp, _pp_mapping_pad, dma_addr and the union
 * of dma_addr_upper and pp_frag_count, which commit 90de47f020db
 * ("page_pool: fragment API support for 32-bit arch with 64-bit DMA")
 * (in v6.7) replaced by pp_frag_count alone.
 *
 * Read through the source index (patches as merged):
 * - struct page_pool_params: Debian 6.1's, plus
 *   "struct napi_struct *napi" after dev from commit 8c48eea3adf3
 *   ("page_pool: allow caching from safely localized NAPI") (in v6.5); one
 *   struct until commit 5027ec19f104 ("net: page_pool: split the
 *   page_pool_params into fast and slow") (in v6.8).
 * - struct page_pool: Debian 6.1's members in the order of commit
 *   06d0fbdad612 ("page_pool: place frag_* fields in one cacheline")
 *   (in v6.6): frag_users, frag_page, frag_offset and pages_state_hold_cnt
 *   right after p; with CONFIG_PAGE_POOL_STATS=y, as distributions build
 *   6.6 (alloc_stats after defer_warn, the per-CPU recycle_stats after ring).
 * - struct page_pool_alloc_stats / _recycle_stats: include/net/page_pool
 *   (unchanged from v5.18 to 7.x; as scripts/layouts/overrides/linux-6.8.h).
 * - struct veth_rq: Debian 6.1's veth.ko (xdp_rxq cacheline-aligned, as its type is), plus "struct page_pool
 *   *page_pool" after xdp_rxq from commit 0ebab78cbcbf ("net: veth: add
 *   page_pool for page recycling") (in v6.4).
 */

struct page_pool_params {
	unsigned int flags;
	unsigned int order;
	unsigned int pool_size;
	int nid;
	struct device *dev;
	struct napi_struct *napi;
	enum dma_data_direction dma_dir;
	unsigned int max_len;
	unsigned int offset;
	void (*init_callback)(struct page *page, void *arg);
	void *init_arg;
};

struct page_pool_alloc_stats {
	u64 fast;
	u64 slow;
	u64 slow_high_order;
	u64 empty;
	u64 refill;
	u64 waive;
};

struct page_pool_recycle_stats {
	u64 cached;
	u64 cache_full;
	u64 ring;
	u64 ring_full;
	u64 released_refcnt;
};

struct pp_alloc_cache {
	u32 count;
	struct page *cache[128];
};

struct page_pool {
	struct page_pool_params p;
	long frag_users;
	struct page *frag_page;
	unsigned int frag_offset;
	u32 pages_state_hold_cnt;
	struct delayed_work release_dw;
	void (*disconnect)(void *);
	unsigned long defer_start;
	unsigned long defer_warn;
	struct page_pool_alloc_stats alloc_stats;
	u32 xdp_mem_id;
	struct pp_alloc_cache alloc __attribute__((__aligned__(64)));
	struct ptr_ring ring;
	struct page_pool_recycle_stats *recycle_stats;
	atomic_t pages_state_release_cnt;
	refcount_t user_cnt;
	u64 destroy_cnt;
};

struct veth_rq {
	struct napi_struct xdp_napi;
	struct napi_struct *napi;
	struct net_device *dev;
	struct bpf_prog *xdp_prog;
	struct xdp_mem_info xdp_mem;
	struct veth_rq_stats stats;
	bool rx_notify_masked;
	struct ptr_ring xdp_ring;
	struct xdp_rxq_info xdp_rxq __attribute__((__aligned__(64)));
	struct page_pool *page_pool;
};

/*
 * Linux v6.8: the first kernel with the page-pool registry (the page_pools
 * XArray, pool->user, netdev->page_pools) and the fast/slow split of the
 * params, but before netmem (v6.9: skb_frag_t became a netmem_ref, the
 * alloc cache stayed struct page *), the system pools and pool->cpuid
 * (v6.9), the dma_map/dma_sync bits (v6.9) and memory providers (v6.12).
 * Everything else comes from the Debian 6.12.y DWARF (struct page with
 * pp_ref_count as in 6.8, struct net_device with page_pools).
 *
 * Read through the source index:
 * - struct page_pool: the member order of the BTF of Ubuntu's
 *   6.8.0-31-generic (the DepSurf dataset, as research/kernel-structs.md
 *   records it), with the types of include/net/page_pool/types.h: alloc is
 *   ____cacheline_aligned_in_smp, the statistics are there
 *   (CONFIG_PAGE_POOL_STATS, as Ubuntu builds it), user holds list,
 *   detach_time (u64 seconds), napi_id and id (net/core/page_pool_user.c
 *   of v6.8, commits f17c69649c69 "net: page_pool: id the page pools" and
 *   its series).
 * - struct page_pool_params_fast / _slow: include/net/page_pool/types.h as
 *   commit 5027ec19f104 ("net: page_pool: split the page_pool_params into
 *   fast and slow") left them; slow.queue_idx came in v6.12.
 * - struct page_pool_alloc_stats / _recycle_stats: include/net/page_pool.h
 *   (the torvalds/linux blob read through the index; unchanged until 7.x).
 * - skb_frag_t: "typedef struct bio_vec skb_frag_t;" until commit
 *   21d2e6737c97 ("net: add netmem to skb_frag_t") (in v6.9), written here
 *   as struct skb_frag with the bio_vec's members (bv_page, bv_len,
 *   bv_offset), since the 6.12 input names the typedef's target so.
 */

struct page_pool_params_fast {
	unsigned int order;
	unsigned int pool_size;
	int nid;
	struct device *dev;
	struct napi_struct *napi;
	enum dma_data_direction dma_dir;
	unsigned int max_len;
	unsigned int offset;
};

struct page_pool_params_slow {
	struct net_device *netdev;
	unsigned int flags;
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
	struct page_pool_params_fast p;
	bool has_init_callback;
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
	struct page_pool_params_slow slow;
	struct {
		struct hlist_node list;
		u64 detach_time;
		u32 napi_id;
		u32 id;
	} user;
};

struct skb_frag {
	struct page *bv_page;
	unsigned int bv_len;
	unsigned int bv_offset;
};

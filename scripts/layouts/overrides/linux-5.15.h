/*
 * Linux v5.15 (Ubuntu 22.04's line): the slab's fields still live in struct
 * page (struct slab came with commit d122019bf061 "mm: Split slab into its
 * own type" in v5.17), no page-pool registry (f17c69649c69, v6.8), no
 * netmem, no skb defer lists (68822bdf76f1 "net: generalize skb freeing
 * deferral to per-cpu lists", v5.19); everything not below comes from the
 * Debian 6.1.y DWARF (vmlinux).
 *
 * Read through the source index (include/linux/mm_types.h and
 * include/net/page_pool.h of the 5.15.y line, unifreq/linux-5.15.y, and the
 * patches as merged):
 * - struct page: v5.15's, with the pp fields of commit 0e9d2a0a3a83
 *   ("page_pool: add interface to manipulate frag count in page pool")
 *   (in v5.15): pp_magic, pp, _pp_mapping_pad, dma_addr and the union of
 *   dma_addr_upper and pp_frag_count; SLUB's slab_list / next, pages,
 *   pobjects, slab_cache, freelist and counters (inuse, objects, frozen);
 *   the compound-page words before the folio rework (compound_mapcount in
 *   the first tail page, hpage_pinned_refcount in the second); x86-64
 *   with CONFIG_MEMCG, spinlock_t ptl (no split ptlocks) and
 *   CONFIG_ARCH_WANT_HUGE_PMD_SHARE.
 * - struct page_pool_params: no init_callback / init_arg (they came with
 *   commit 35b2e549894b "page_pool: Add callback to init pages when they
 *   are allocated", in v5.18) and no napi (8c48eea3adf3, v6.5).
 * - struct page_pool: the frag_* members of commit 53e0961da1c7
 *   ("page_pool: add frag page recycling support in page pool") (in
 *   v5.15); no xdp_mem_id (64693ec7774e "page_pool: Store the XDP mem id",
 *   v5.18) and no stats (CONFIG_PAGE_POOL_STATS came with 8610037e8106
 *   "page_pool: Add allocation stats", v5.18; the 5.15.y backport appends
 *   them at the end, upstream v5.15 has none).
 */

struct page {
	unsigned long flags;
	union {
		struct {
			struct list_head lru;
			struct address_space *mapping;
			unsigned long index;
			unsigned long private;
		};
		struct {
			unsigned long pp_magic;
			struct page_pool *pp;
			unsigned long _pp_mapping_pad;
			unsigned long dma_addr;
			union {
				unsigned long dma_addr_upper;
				atomic_long_t pp_frag_count;
			};
		};
		struct {
			union {
				struct list_head slab_list;
				struct {
					struct page *next;
					int pages;
					int pobjects;
				};
			};
			struct kmem_cache *slab_cache;
			void *freelist;
			union {
				void *s_mem;
				unsigned long counters;
				struct {
					unsigned int inuse : 16;
					unsigned int objects : 15;
					unsigned int frozen : 1;
				};
			};
		};
		struct {
			unsigned long compound_head;
			unsigned char compound_dtor;
			unsigned char compound_order;
			atomic_t compound_mapcount;
			unsigned int compound_nr;
		};
		struct {
			unsigned long _compound_pad_1;
			atomic_t hpage_pinned_refcount;
			struct list_head deferred_list;
		};
		struct {
			unsigned long _pt_pad_1;
			pgtable_t pmd_huge_pte;
			unsigned long _pt_pad_2;
			union {
				struct mm_struct *pt_mm;
				atomic_t pt_frag_refcount;
				atomic_t pt_share_count;
			};
			spinlock_t ptl;
		};
		struct {
			struct dev_pagemap *pgmap;
			void *zone_device_data;
		};
		struct callback_head callback_head;
	};
	union {
		atomic_t _mapcount;
		unsigned int page_type;
		unsigned int active;
		int units;
	};
	atomic_t _refcount;
	unsigned long memcg_data;
};

struct page_pool_params {
	unsigned int flags;
	unsigned int order;
	unsigned int pool_size;
	int nid;
	struct device *dev;
	enum dma_data_direction dma_dir;
	unsigned int max_len;
	unsigned int offset;
};

struct pp_alloc_cache {
	u32 count;
	struct page *cache[128];
};

struct page_pool {
	struct page_pool_params p;
	struct delayed_work release_dw;
	void (*disconnect)(void *);
	unsigned long defer_start;
	unsigned long defer_warn;
	u32 pages_state_hold_cnt;
	unsigned int frag_offset;
	struct page *frag_page;
	long frag_users;
	struct pp_alloc_cache alloc __attribute__((__aligned__(64)));
	struct ptr_ring ring;
	atomic_t pages_state_release_cnt;
	refcount_t user_cnt;
	u64 destroy_cnt;
};

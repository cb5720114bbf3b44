/*
 * Linux 7.1-rc1..rc5: commit db359fccf212 ("mm: introduce a new page type for
 * page pool in page type") gave struct net_iov a page_type at the offset of
 * struct page's, reordered type and owner, and added PGTY_netpp; page-pool
 * pages are marked by page type, no longer by PP_SIGNATURE in pp_magic.
 * Reverted by 54cf41c969da before v7.1.  From include/net/netmem.h and
 * include/linux/page-flags.h at that commit.
 */
struct net_iov {
	struct netmem_desc desc;
	unsigned int page_type;
	enum net_iov_type type;
	struct net_iov_area *owner;
};

enum pagetype {
	PGTY_buddy = 0xf0,
	PGTY_offline = 0xf1,
	PGTY_table = 0xf2,
	PGTY_guard = 0xf3,
	PGTY_hugetlb = 0xf4,
	PGTY_slab = 0xf5,
	PGTY_zsmalloc = 0xf6,
	PGTY_unaccepted = 0xf7,
	PGTY_large_kmalloc = 0xf8,
	PGTY_netpp = 0xf9,
	PGTY_mapcount_underflow = 0xff
};

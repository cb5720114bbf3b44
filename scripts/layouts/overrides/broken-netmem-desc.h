/*
 * Deliberately broken: Linux 7.3's struct netmem_desc with _pp_mapping_pad
 * shrunk to 4 bytes (offsets unchanged), so exactly one of include/net/netmem.h's
 * agreements (NETMEM_DESC_ASSERT_OFFSET(_pp_mapping_pad, ...), by size) fails.
 * Only for proving that `netmem-probe layout` exits 1 and names the members.
 */
struct netmem_desc {
	unsigned long _flags;
	unsigned long pp_magic;
	struct page_pool *pp;
	unsigned int _pp_mapping_pad;
	unsigned int __broken_pad;
	unsigned long dma_addr;
	atomic_long_t pp_ref_count;
};

// SPDX-License-Identifier: GPL-2.0
/*
 * pp_test: a page-pool user for netmem-probe's real-kernel tier, on kernels
 * whose in-tree drivers make no page pool under QEMU (Debian 12's 6.1).
 *
 * It registers two Ethernet devices, "pptest0" (what a driver would own) and
 * "pptest1" (a second device to send from), and drives page pools on pptest0
 * as a driver does, by commands written to /sys/module/pp_test/parameters/cmd:
 *
 *   pool N        create pool N (0..3) on pptest0
 *   rx N COUNT    COUNT UDP datagrams to DST:PORT (param dst/port), each with
 *                 its payload in a page of pool N (skb frag, pp_recycle),
 *                 received on pptest0 like a NIC's rx (netif_rx)
 *   hold N COUNT  COUNT pages of pool N kept in the module's own array
 *                 (a driver's rx ring)
 *   stage N COUNT COUNT pages of pool N kept for "backlog" (at most 16)
 *   backlog N MS CPU
 *                 a work item on CPU (0 or 1) that, with bottom halves off,
 *                 receives the pages "stage" kept, each in a UDP datagram
 *                 to DST:PORT on pptest0 (netif_rx): they wait in that CPU's
 *                 backlog (softnet_data.input_pkt_queue) for MS
 *                 milliseconds (at most 10000: the soft-lockup detector
 *                 speaks after 20 s), then its NET_RX softirq delivers them
 *   tx N COUNT [D [STEP]]
 *                 stop pptestD's tx queues (D 0 or 1, default 0; as a driver
 *                 whose ring is full does), then send COUNT UDP datagrams
 *                 from SRC to DST:PORT out of pptestD, each with its payload
 *                 in a page of pool N: they wait in the device's qdisc.  With
 *                 STEP (microseconds), datagram i is stamped to leave
 *                 (COUNT - i) * STEP from now (skb->tstamp, as SO_TXTIME
 *                 does): each earlier than the one before, which sch_fq
 *                 keeps in its flow's time-ordered rbtree
 *   destroy N     page_pool_destroy() of pool N, whatever is still out
 *
 * /sys/module/pp_test/parameters/state prints the truth, one line each:
 *   pool N ADDRESS hold RELEASE_CNT destroyed
 *   held N PAGE
 *   backlog CPU QUEUED DONE   (QUEUED: datagrams netif_rx took; DONE: 1
 *                             once bottom halves are back on)
 */
#include <linux/etherdevice.h>
#include <linux/inet.h>
#include <linux/ip.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/udp.h>
#include <linux/version.h>
#include <net/ip.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
#include <net/page_pool/helpers.h>
#else
#include <net/page_pool.h>
#endif

#define NPOOLS 5
#define NHELD 64
#define NSTAGED 16
#define MAX_BACKLOG_MS 10000
#define PAYLOAD 1000
#define HLEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

static struct net_device *ppdev, *ppdev1;
static struct page_pool *pools[NPOOLS];
static bool destroyed[NPOOLS];
static struct page *held[NHELD];
static int held_pool[NHELD];
static int nheld;
static struct page *staged[NSTAGED];
static int nstaged, staged_pool;
static int backlog_cpu = -1, backlog_ms, backlog_queued, backlog_done;
static struct work_struct backlog_work;
static DEFINE_MUTEX(lock);

static char *dst = "10.99.0.1";
module_param(dst, charp, 0444);
static int port = 7000;
module_param(port, int, 0444);
static char *src = "10.99.0.2";
module_param(src, charp, 0444);

static netdev_tx_t pp_xmit(struct sk_buff *skb, struct net_device *dev)
{
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops pp_ops = {
	.ndo_start_xmit = pp_xmit,
};

static int pool_create(int n)
{
	struct page_pool_params pp = {
		.order = 0,
		.pool_size = 256,
		.nid = NUMA_NO_NODE,
		.dev = &ppdev->dev,
		.dma_dir = DMA_FROM_DEVICE,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
		.netdev = ppdev,
#endif
	};
	struct page_pool *pool;

	if (pools[n])
		return -EEXIST;
	pool = page_pool_create(&pp);
	if (IS_ERR(pool))
		return PTR_ERR(pool);
	pools[n] = pool;
	return 0;
}

/* The IPv4 and UDP headers of a datagram of PAYLOAD bytes to port, after eth. */
static void put_ip_udp(struct sk_buff *skb, __be32 saddr, __be32 daddr, int seq)
{
	struct iphdr *iph;
	struct udphdr *uh;

	skb_set_network_header(skb, skb->len);
	iph = skb_put(skb, sizeof(*iph));
	memset(iph, 0, sizeof(*iph));
	iph->version = 4;
	iph->ihl = 5;
	iph->ttl = 64;
	iph->protocol = IPPROTO_UDP;
	iph->saddr = saddr;
	iph->daddr = daddr;
	iph->tot_len = htons(sizeof(*iph) + sizeof(*uh) + PAYLOAD);
	iph->id = htons(seq);
	ip_send_check(iph);
	skb_set_transport_header(skb, skb->len);
	uh = skb_put(skb, sizeof(*uh));
	uh->source = htons(40000);
	uh->dest = htons(port);
	uh->len = htons(sizeof(*uh) + PAYLOAD);
	uh->check = 0;
}

/* A datagram with its payload in page (of pool) received on pptest0: netif_rx()'s verdict. */
static int rx_page(struct page_pool *pool, struct page *page, __be32 saddr, __be32 daddr, int seq)
{
	struct sk_buff *skb;
	struct ethhdr *eth;

	skb = netdev_alloc_skb(ppdev, HLEN + NET_IP_ALIGN);
	if (!skb) {
		page_pool_put_full_page(pool, page, false);
		return -ENOMEM;
	}
	skb_reserve(skb, NET_IP_ALIGN);
	eth = skb_put(skb, sizeof(*eth));
	ether_addr_copy(eth->h_dest, ppdev->dev_addr);
	eth_zero_addr(eth->h_source);
	eth->h_source[5] = 1;
	eth->h_proto = htons(ETH_P_IP);
	put_ip_udp(skb, saddr, daddr, seq);
	memset(page_address(page), 'p', PAYLOAD);
	skb_add_rx_frag(skb, 0, page, 0, PAYLOAD, PAGE_SIZE);
	skb_mark_for_recycle(skb);
	skb->ip_summed = CHECKSUM_UNNECESSARY;
	skb->protocol = eth_type_trans(skb, ppdev);
	return netif_rx(skb);
}

static int rx_one(struct page_pool *pool, __be32 saddr, __be32 daddr, int seq)
{
	struct page *page = page_pool_dev_alloc_pages(pool);

	if (!page)
		return -ENOMEM;
	rx_page(pool, page, saddr, daddr, seq);
	return 0;
}

/* On backlog_cpu: the staged pages into its backlog, held there backlog_ms. */
static void backlog_fn(struct work_struct *work)
{
	__be32 saddr = in_aton(src), daddr = in_aton(dst);
	int i, queued = 0;

	local_bh_disable();
	for (i = 0; i < nstaged; i++) {
		if (rx_page(pools[staged_pool], staged[i], saddr, daddr, i) == NET_RX_SUCCESS)
			queued++;
		staged[i] = NULL;
	}
	nstaged = 0;
	WRITE_ONCE(backlog_queued, queued);
	mdelay(backlog_ms);
	local_bh_enable();
	WRITE_ONCE(backlog_done, 1);
}

static int tx_one(struct page_pool *pool, struct net_device *dev, __be32 saddr, __be32 daddr,
		  int seq, u64 tstamp)
{
	struct page *page = page_pool_dev_alloc_pages(pool);
	struct sk_buff *skb;
	struct ethhdr *eth;

	if (!page)
		return -ENOMEM;
	skb = alloc_skb(HLEN + NET_IP_ALIGN, GFP_ATOMIC);
	if (!skb) {
		page_pool_put_full_page(pool, page, false);
		return -ENOMEM;
	}
	skb_reserve(skb, NET_IP_ALIGN);
	skb_reset_mac_header(skb);
	eth = skb_put(skb, sizeof(*eth));
	eth_broadcast_addr(eth->h_dest);
	ether_addr_copy(eth->h_source, dev->dev_addr);
	eth->h_proto = htons(ETH_P_IP);
	put_ip_udp(skb, saddr, daddr, seq);
	memset(page_address(page), 't', PAYLOAD);
	skb_add_rx_frag(skb, 0, page, 0, PAYLOAD, PAGE_SIZE);
	skb_mark_for_recycle(skb);
	skb->protocol = htons(ETH_P_IP);
	skb->dev = dev;
	skb->tstamp = ns_to_ktime(tstamp);
	return dev_queue_xmit(skb) == NET_XMIT_SUCCESS ? 0 : -ENOBUFS;
}

static int do_cmd(const char *buf)
{
	char word[16];
	int n = -1, count = 0, d = 0, step = 0, i, err = 0;
	struct net_device *dev;
	__be32 saddr, daddr;
	u64 now;

	if (sscanf(buf, "%15s %d %d %d %d", word, &n, &count, &d, &step) < 2 || n < 0 ||
	    n >= NPOOLS || d < 0 || d > 1 || step < 0)
		return -EINVAL;
	if (!strcmp(word, "pool"))
		return pool_create(n);
	if (!pools[n] || destroyed[n])
		return -ENOENT;
	if (!strcmp(word, "rx")) {
		saddr = in_aton(src);
		daddr = in_aton(dst);
		for (i = 0; i < count && !err; i++) {
			local_bh_disable();
			err = rx_one(pools[n], saddr, daddr, i);
			local_bh_enable();
		}
		return err;
	}
	if (!strcmp(word, "hold")) {
		for (i = 0; i < count && nheld < NHELD; i++) {
			local_bh_disable();
			held[nheld] = page_pool_dev_alloc_pages(pools[n]);
			local_bh_enable();
			if (!held[nheld])
				return -ENOMEM;
			held_pool[nheld++] = n;
		}
		return 0;
	}
	if (!strcmp(word, "stage")) {
		if (nstaged && staged_pool != n)
			return -EBUSY;
		staged_pool = n;
		for (i = 0; i < count && nstaged < NSTAGED; i++) {
			local_bh_disable();
			staged[nstaged] = page_pool_dev_alloc_pages(pools[n]);
			local_bh_enable();
			if (!staged[nstaged])
				return -ENOMEM;
			nstaged++;
		}
		return 0;
	}
	if (!strcmp(word, "backlog")) {
		if (staged_pool != n || !nstaged || backlog_cpu >= 0 || !cpu_online(d) ||
		    count > MAX_BACKLOG_MS)
			return -EINVAL;
		backlog_cpu = d;
		backlog_ms = count;
		backlog_queued = -1;
		schedule_work_on(d, &backlog_work);
		return 0;
	}
	if (!strcmp(word, "tx")) {
		dev = d ? ppdev1 : ppdev;
		netif_tx_stop_all_queues(dev);
		saddr = in_aton(dst);
		daddr = in_aton(src);
		now = ktime_get_ns();
		for (i = 0; i < count && !err; i++) {
			local_bh_disable();
			err = tx_one(pools[n], dev, saddr, daddr, i,
				     step ? now + (u64)(count - i) * step * NSEC_PER_USEC : 0);
			local_bh_enable();
		}
		return err;
	}
	if (!strcmp(word, "destroy")) {
		page_pool_destroy(pools[n]);
		destroyed[n] = true;
		return 0;
	}
	return -EINVAL;
}

static int cmd_set(const char *val, const struct kernel_param *kp)
{
	int err;

	mutex_lock(&lock);
	err = do_cmd(val);
	mutex_unlock(&lock);
	return err;
}

static int state_get(char *buf, const struct kernel_param *kp)
{
	int n, i, len = 0;

	mutex_lock(&lock);
	for (n = 0; n < NPOOLS; n++)
		if (pools[n])
			len += scnprintf(buf + len, PAGE_SIZE - len, "pool %d %px %u %d %d\n", n,
					 pools[n], pools[n]->pages_state_hold_cnt,
					 atomic_read(&pools[n]->pages_state_release_cnt),
					 destroyed[n]);
	for (i = 0; i < nheld; i++)
		len += scnprintf(buf + len, PAGE_SIZE - len, "held %d %px\n", held_pool[i],
				 held[i]);
	if (backlog_cpu >= 0)
		len += scnprintf(buf + len, PAGE_SIZE - len, "backlog %d %d %d\n", backlog_cpu,
				 READ_ONCE(backlog_queued), READ_ONCE(backlog_done));
	mutex_unlock(&lock);
	return len;
}

static const struct kernel_param_ops cmd_ops = { .set = cmd_set };
module_param_cb(cmd, &cmd_ops, NULL, 0200);
static const struct kernel_param_ops state_ops = { .get = state_get };
module_param_cb(state, &state_ops, NULL, 0444);

static void pp_setup(struct net_device *dev)
{
	ether_setup(dev);
	dev->netdev_ops = &pp_ops;
	/* scatter-gather: a requeued skb keeps its frags (without it the first
	 * skb "tx" sends is linearized on its way to the stopped queue, and its
	 * page goes back to the pool) */
	dev->features |= NETIF_F_SG;
}

static struct net_device *pp_register(void)
{
	struct net_device *dev = alloc_netdev(0, "pptest%d", NET_NAME_ENUM, pp_setup);
	int err;

	if (!dev)
		return ERR_PTR(-ENOMEM);
	eth_hw_addr_random(dev);
	err = register_netdev(dev);
	if (err) {
		free_netdev(dev);
		return ERR_PTR(err);
	}
	return dev;
}

static int __init pp_init(void)
{
	INIT_WORK(&backlog_work, backlog_fn);
	ppdev = pp_register();
	if (IS_ERR(ppdev))
		return PTR_ERR(ppdev);
	ppdev1 = pp_register();
	if (IS_ERR(ppdev1)) {
		unregister_netdev(ppdev);
		free_netdev(ppdev);
		return PTR_ERR(ppdev1);
	}
	return 0;
}

/* No module_exit: pages still out hold the pools, so the module stays. */
module_init(pp_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("page_pool user for netmem-probe's real-kernel tests");

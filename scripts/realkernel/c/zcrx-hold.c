// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * zcrx-hold: create real io_uring zcrx net_iovs without a NIC and keep some
 * of them held by user space, for the realkernel vmcores.
 *
 * Built on the host by scripts/realkernel/make-vmcore with
 *   gcc -static -O2 -isystem <linux-libc-dev of the booted kernel>/usr/include
 * (raw syscalls, no liburing), and run inside the QEMU guest.
 *
 * What it does:
 *   1. io_uring_setup() with SINGLE_ISSUER | DEFER_TASKRUN | CQE32;
 *   2. IORING_REGISTER_ZCRX_IFQ with ZCRX_REG_NODEV (no netdev, no page pool):
 *      one area of AREA_PAGES user pages -> that many struct net_iov;
 *   3. a loopback TCP connection; multishot IORING_OP_RECV_ZC on the accepted
 *      socket.  The skbs are not net_iov backed, so the kernel copies the data
 *      into free niovs (copy fallback) and posts one CQE per niov chunk;
 *   4. hands the first RETURN_N niovs back through the refill queue and
 *      ZCRX_CTRL_FLUSH_RQ; keeps the rest (user_refs > 0);
 *   5. prints one JSON line describing all of that, then sleeps forever with
 *      everything open (the vmcore is taken while it sleeps).
 *
 * usage: zcrx-hold [SEND_BYTES [RETURN_N]]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ZCRX_REG_NODEV is an enum constant (not a macro): make-vmcore only builds
 * this file when the kernel's uapi header declares it. */

#define AREA_PAGES	64
#define RQ_ENTRIES	64
#define MAX_CQES	256
/* the kernel's PAGE_SIZE (4 KiB on x86-64, 4 or 16 KiB on arm64): areas and the refill
 * ring are registered in whole pages */
#define PAGE_SZ		((size_t)sysconf(_SC_PAGESIZE))

static void die(const char *what, long err)
{
	printf("{\"error\": \"%s\", \"errno\": %ld, \"strerror\": \"%s\"}\n",
	       what, err, strerror((int)err));
	fflush(stdout);
	exit(1);
}

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
	return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

struct ring {
	int fd;
	unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	char *cqes;		/* CQE32: 32 bytes each */
	struct io_uring_sqe *sqes;
	unsigned sq_local_tail;
};

static void ring_init(struct ring *r)
{
	struct io_uring_params p;
	size_t sq_sz, cq_sz;
	char *sq, *cq;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_CQE32;
	p.cq_entries = MAX_CQES;
	p.flags |= IORING_SETUP_CQSIZE;
	r->fd = sys_setup(16, &p);
	if (r->fd < 0)
		die("io_uring_setup", errno);
	sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_sz = p.cq_off.cqes + p.cq_entries * 2 * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (cq_sz > sq_sz)
			sq_sz = cq_sz;
		cq_sz = sq_sz;
	}
	sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		  r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		die("mmap sq ring", errno);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		cq = sq;
	} else {
		cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			  r->fd, IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			die("mmap cq ring", errno);
	}
	r->sq_head = (unsigned *)(sq + p.sq_off.head);
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = cq + p.cq_off.cqes;
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		       IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		die("mmap sqes", errno);
	r->sq_local_tail = *r->sq_tail;
}

static struct io_uring_sqe *get_sqe(struct ring *r)
{
	unsigned idx = r->sq_local_tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[idx];

	memset(sqe, 0, sizeof(*sqe));
	r->sq_array[idx] = idx;
	r->sq_local_tail++;
	return sqe;
}

static void submit(struct ring *r)
{
	__atomic_store_n(r->sq_tail, r->sq_local_tail, __ATOMIC_RELEASE);
}

int main(int argc, char **argv)
{
	long send_bytes = argc > 1 ? atol(argv[1]) : 40000;
	int return_n = argc > 2 ? atoi(argv[2]) : 4;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t alen = sizeof(addr);
	struct io_uring_zcrx_ifq_reg reg;
	struct io_uring_zcrx_area_reg area_reg;
	struct io_uring_region_desc rd;
	struct ring r;
	unsigned long long cqe_off[MAX_CQES];
	int cqe_len[MAX_CQES];
	int ncqe = 0, rearms = 0;
	long received = 0;
	int lfd, cfd, afd, one = 1, i, ret;
	size_t area_len = AREA_PAGES * PAGE_SZ, rq_len;
	char *area, *rqmem, *buf;
	unsigned *rq_tail;
	struct io_uring_zcrx_rqe *rqes;
	unsigned rq_local_tail;
	struct zcrx_ctrl ctrl;
	unsigned long long token;

	ring_init(&r);

	/* refill queue region (user memory) and the area */
	rq_len = (PAGE_SZ + RQ_ENTRIES * sizeof(struct io_uring_zcrx_rqe) + PAGE_SZ - 1) &
		 ~(size_t)(PAGE_SZ - 1);
	rqmem = mmap(NULL, rq_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	area = mmap(NULL, area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rqmem == MAP_FAILED || area == MAP_FAILED)
		die("mmap area", errno);
	memset(&rd, 0, sizeof(rd));
	rd.user_addr = (unsigned long)rqmem;
	rd.size = rq_len;
	rd.flags = IORING_MEM_REGION_TYPE_USER;
	memset(&area_reg, 0, sizeof(area_reg));
	area_reg.addr = (unsigned long)area;
	area_reg.len = area_len;
	memset(&reg, 0, sizeof(reg));
	reg.if_idx = 0;
	reg.if_rxq = 0;
	reg.rq_entries = RQ_ENTRIES;
	reg.flags = ZCRX_REG_NODEV;
	reg.area_ptr = (unsigned long)&area_reg;
	reg.region_ptr = (unsigned long)&rd;
	ret = sys_register(r.fd, IORING_REGISTER_ZCRX_IFQ, &reg, 1);
	if (ret < 0)
		die("IORING_REGISTER_ZCRX_IFQ(ZCRX_REG_NODEV)", errno);
	token = area_reg.rq_area_token;
	rq_tail = (unsigned *)(rqmem + reg.offsets.tail);
	rqes = (struct io_uring_zcrx_rqe *)(rqmem + reg.offsets.rqes);
	rq_local_tail = *rq_tail;

	/* loopback TCP connection */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&addr, &alen))
		die("listen", errno);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(cfd, (struct sockaddr *)&addr, sizeof(addr)))
		die("connect", errno);
	afd = accept(lfd, NULL, NULL);
	if (afd < 0)
		die("accept", errno);

	/* multishot RECV_ZC */
	{
		struct io_uring_sqe *sqe = get_sqe(&r);

		sqe->opcode = IORING_OP_RECV_ZC;
		sqe->fd = afd;
		sqe->ioprio = IORING_RECV_MULTISHOT;
		sqe->zcrx_ifq_idx = reg.zcrx_id;
		sqe->user_data = 2;
		submit(&r);
		ret = sys_enter(r.fd, 1, 0, IORING_ENTER_GETEVENTS);
		if (ret < 0)
			die("io_uring_enter(submit)", errno);
	}

	buf = malloc(send_bytes);
	for (i = 0; i < send_bytes; i++)
		buf[i] = (char)('a' + i % 26);
	{
		long off = 0;

		while (off < send_bytes) {
			ssize_t n = send(cfd, buf + off, send_bytes - off, 0);

			if (n < 0)
				die("send", errno);
			off += n;
		}
	}

	while (received < send_bytes) {
		unsigned head, tail;

		ret = sys_enter(r.fd, 0, 1, IORING_ENTER_GETEVENTS);
		if (ret < 0 && errno != EINTR)
			die("io_uring_enter(wait)", errno);
		head = *r.cq_head;
		tail = __atomic_load_n(r.cq_tail, __ATOMIC_ACQUIRE);
		for (; head != tail; head++) {
			struct io_uring_cqe *cqe =
				(struct io_uring_cqe *)(r.cqes + 32 * (head & *r.cq_mask));
			struct io_uring_zcrx_cqe *rcqe = (struct io_uring_zcrx_cqe *)(cqe + 1);

			if (cqe->res < 0)
				die("recv_zc completion", -cqe->res);
			if (cqe->res > 0 && ncqe < MAX_CQES) {
				cqe_off[ncqe] = rcqe->off;
				cqe_len[ncqe] = cqe->res;
				ncqe++;
			}
			received += cqe->res;
			if (!(cqe->flags & IORING_CQE_F_MORE) && received < send_bytes) {
				struct io_uring_sqe *sqe = get_sqe(&r);

				sqe->opcode = IORING_OP_RECV_ZC;
				sqe->fd = afd;
				sqe->ioprio = IORING_RECV_MULTISHOT;
				sqe->zcrx_ifq_idx = reg.zcrx_id;
				sqe->user_data = 2;
				submit(&r);
				rearms++;
			}
		}
		__atomic_store_n(r.cq_head, head, __ATOMIC_RELEASE);
		if (rearms && sys_enter(r.fd, 1, 0, 0) < 0)
			die("io_uring_enter(rearm)", errno);
		rearms = 0;
	}

	/* hand the first return_n niovs back: refill queue + ZCRX_CTRL_FLUSH_RQ */
	if (return_n > ncqe)
		return_n = ncqe;
	for (i = 0; i < return_n; i++) {
		struct io_uring_zcrx_rqe *rqe = &rqes[rq_local_tail & (reg.rq_entries - 1)];

		rqe->off = (cqe_off[i] & ~IORING_ZCRX_AREA_MASK) | token;
		rqe->len = cqe_len[i];
		rqe->__pad = 0;
		rq_local_tail++;
	}
	__atomic_store_n(rq_tail, rq_local_tail, __ATOMIC_RELEASE);
	memset(&ctrl, 0, sizeof(ctrl));
	ctrl.zcrx_id = reg.zcrx_id;
	ctrl.op = ZCRX_CTRL_FLUSH_RQ;
	ret = sys_register(r.fd, IORING_REGISTER_ZCRX_CTRL, &ctrl, 0);
	if (ret < 0)
		die("ZCRX_CTRL_FLUSH_RQ", errno);

	printf("{\"pid\": %d, \"ring_fd\": %d, \"zcrx_id\": %u, \"area_id\": %llu, "
	       "\"area_token\": \"0x%llx\", \"area_addr\": \"0x%lx\", \"area_len\": %zu, "
	       "\"rx_buf_len\": %u, \"num_niovs\": %zu, \"rq_entries\": %u, "
	       "\"flags\": \"ZCRX_REG_NODEV\", \"sent_bytes\": %ld, \"received_bytes\": %ld, "
	       "\"cqes\": [",
	       getpid(), r.fd, reg.zcrx_id, token >> IORING_ZCRX_AREA_SHIFT, token,
	       (unsigned long)area, area_len, reg.rx_buf_len,
	       area_len / (reg.rx_buf_len ? reg.rx_buf_len : PAGE_SZ), reg.rq_entries,
	       send_bytes, received);
	for (i = 0; i < ncqe; i++)
		printf("%s{\"off\": %llu, \"len\": %d, \"niov\": %llu}", i ? ", " : "",
		       cqe_off[i] & ~IORING_ZCRX_AREA_MASK, cqe_len[i],
		       (cqe_off[i] & ~IORING_ZCRX_AREA_MASK) /
			       (reg.rx_buf_len ? reg.rx_buf_len : PAGE_SZ));
	printf("], \"returned_offsets\": [");
	for (i = 0; i < return_n; i++)
		printf("%s%llu", i ? ", " : "", cqe_off[i] & ~IORING_ZCRX_AREA_MASK);
	printf("], \"held_offsets\": [");
	for (i = return_n; i < ncqe; i++)
		printf("%s%llu", i > return_n ? ", " : "", cqe_off[i] & ~IORING_ZCRX_AREA_MASK);
	printf("], \"returned\": %d, \"held\": %d}\n", return_n, ncqe - return_n);
	fflush(stdout);

	/* keep the ring, the ifq, the area and the sockets alive through the dump */
	for (;;)
		pause();
	return 0;
}

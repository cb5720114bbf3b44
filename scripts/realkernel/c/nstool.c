// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * nstool: tiny static helper for the realkernel initramfs (busybox has no
 * "ip link set ... netns").  Built on the host with gcc -static by
 * scripts/realkernel/make-vmcore.
 *
 *   nstool move IFNAME NSFILE    move netdev IFNAME into the network namespace
 *                                bind-mounted at NSFILE (RTM_NEWLINK with
 *                                IFLA_NET_NS_FD), like "ip link set IFNAME netns".
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int move_link(const char *ifname, const char *nsfile)
{
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
		char attrbuf[64];
	} req;
	struct rtattr *rta;
	char buf[4096];
	unsigned int ifindex;
	int nsfd, fd, len;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

	ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		fprintf(stderr, "nstool: no such interface %s\n", ifname);
		return 1;
	}
	nsfd = open(nsfile, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0) {
		fprintf(stderr, "nstool: open %s: %s\n", nsfile, strerror(errno));
		return 1;
	}
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	req.nh.nlmsg_type = RTM_NEWLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	req.nh.nlmsg_seq = 1;
	req.ifi.ifi_family = AF_UNSPEC;
	req.ifi.ifi_index = ifindex;
	rta = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
	rta->rta_type = IFLA_NET_NS_FD;
	rta->rta_len = RTA_LENGTH(sizeof(__u32));
	*(__u32 *)RTA_DATA(rta) = nsfd;
	req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0 || sendto(fd, &req, req.nh.nlmsg_len, 0,
			     (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("nstool: netlink");
		return 1;
	}
	len = recv(fd, buf, sizeof(buf), 0);
	if (len < (int)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
		perror("nstool: recv");
		return 1;
	}
	{
		struct nlmsghdr *nh = (struct nlmsghdr *)buf;
		struct nlmsgerr *err = NLMSG_DATA(nh);

		if (nh->nlmsg_type == NLMSG_ERROR && err->error) {
			fprintf(stderr, "nstool: move %s: %s\n", ifname,
				strerror(-err->error));
			return 1;
		}
	}
	close(fd);
	close(nsfd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "move"))
		return move_link(argv[2], argv[3]);
	fprintf(stderr, "usage: nstool move IFNAME NSFILE\n");
	return 2;
}

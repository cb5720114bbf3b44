#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the realkernel initramfs (busybox).  Built into the initrd by
# scripts/realkernel/make-vmcore; runs in the QEMU guest.
#
# 1. load the early modules (virtio_net, veth, qemu_fw_cfg + deps);
# 2. create netns "pp-poison" and move the third virtio NIC into it;
# 3. if virtio_net has page pools (7.x) and netmem.pmcycle=1: one PM
#    freeze/restore cycle (pm_test=devices, s2idle) so virtio_net re-creates its
#    (netmem.virtio_pp=1: the host found virtnet_create_page_pools in virtio_net.ko)
#    page pools while that NIC lives in pp-poison (virtio creates its pools at
#    probe/restore time only; pools of a NIC created in init_net are orphaned
#    onto init_net's lo when the NIC moves).  The 9p modules are not loaded yet:
#    9pnet_virtio has no freeze/restore and would not survive the cycle;
# 4. load the 9p stack, mount the root (the host's / on amd64, an arm64 userland
#    otherwise) read-only (9p), the checkout and the cache at their host paths
#    inside it (their own shares: the guest's tmpfs on /tmp would hide them) and
#    the output share, chroot into it and run the scenario with its python.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=755 run /run
say() { echo "netmem-init [$(cut -d' ' -f1 /proc/uptime)]: $*"; }
fail() { echo "netmem-init: FATAL: $*"; echo "NETMEM-PROBE-FATAL $*"; sleep 1; poweroff -f; }
PY= SCEN= PMAC= PMCYCLE=1 VPP=0 REPO= CACHE=
for x in $(cat /proc/cmdline); do
	case "$x" in
	netmem.python=*) PY=${x#*=} ;;
	netmem.scenario=*) SCEN=${x#*=} ;;
	netmem.poison_mac=*) PMAC=${x#*=} ;;
	netmem.pmcycle=*) PMCYCLE=${x#*=} ;;
	netmem.virtio_pp=*) VPP=${x#*=} ;;
	netmem.repo=*) REPO=${x#*=} ;;
	netmem.cache=*) CACHE=${x#*=} ;;
	esac
done
for m in $(cat /modules/early); do
	insmod /modules/$m.ko || fail "insmod $m"
done
say "early modules loaded: $(cat /modules/early | tr '\n' ' ')"

IFACE=
i=0
while [ -z "$IFACE" ] && [ $i -lt 50 ]; do
	for d in /sys/class/net/*; do
		[ "$(cat $d/address 2>/dev/null)" = "$PMAC" ] && IFACE=${d##*/}
	done
	[ -z "$IFACE" ] && sleep 0.1
	i=$((i + 1))
done
[ -n "$IFACE" ] || fail "no NIC with MAC $PMAC"
# like "ip netns add": /run/netns is a shared bind mount of itself, so that the
# later "ip netns add" in the chroot does not stack a new mount over ours
mkdir -p /run/netns
mount --bind /run/netns /run/netns && mount --make-shared /run/netns
touch /run/netns/pp-poison
unshare --net=/run/netns/pp-poison true || fail "unshare --net"
nstool move "$IFACE" /run/netns/pp-poison || fail "move $IFACE to pp-poison"
PM=skipped
PMWHY="netmem.pmcycle=0"
if [ "$VPP" = 0 ]; then
	PMWHY="virtio_net has no page pools on this kernel (no virtnet_create_page_pools)"
elif [ "$PMCYCLE" = 1 ]; then
	if [ -w /sys/power/pm_test ] && grep -q freeze /sys/power/state; then
		echo devices > /sys/power/pm_test
		[ -w /sys/module/suspend/parameters/pm_test_delay ] &&
			echo 1 > /sys/module/suspend/parameters/pm_test_delay
		T0=$(cut -d' ' -f1 /proc/uptime)
		if echo freeze > /sys/power/state; then
			PM=done
			PMWHY="pm_test=devices freeze cycle from $T0 to $(cut -d' ' -f1 /proc/uptime) s"
		else
			PM=failed
			PMWHY="echo freeze > /sys/power/state failed"
		fi
		echo none > /sys/power/pm_test
	else
		PM=unsupported
		PMWHY="no /sys/power/pm_test (CONFIG_PM_DEBUG) or no freeze state"
	fi
fi
say "poison NIC $IFACE moved to pp-poison; PM cycle: $PM ($PMWHY)"
printf '{"poison_ifname": "%s", "poison_mac": "%s", "virtio_page_pools": %s, "pm_cycle": "%s", "pm_cycle_detail": "%s"}\n' \
	"$IFACE" "$PMAC" "$([ $VPP = 1 ] && echo true || echo false)" "$PM" "$PMWHY" > /run/netmem-init.json

for m in $(cat /modules/late); do
	insmod /modules/$m.ko || fail "insmod $m"
done
# cache=loose: the host's / is only read here, and uncached 9p lookups make python
# start up very slowly under TCG
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || fail "mount hostroot"
mount --move /run /host/run || fail "mount --move /run"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs tmpfs /host/tmp
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
for share in "netmemrepo:$REPO" "netmemcache:$CACHE"; do
	dir=${share#*:}
	mkdir -p "/host$dir" 2>/dev/null
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose "${share%%:*}" "/host$dir" ||
		fail "mount ${share%%:*} at $dir"
done
mkdir -p /host/run/netmem-out /host/run/netmem-bpf
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 netmemout /host/run/netmem-out || fail "mount netmemout"
mount -t bpf bpf /host/run/netmem-bpf || fail "mount bpffs"
say "root, checkout and cache mounted at $(cut -d' ' -f1 /proc/uptime) s; running $PY $SCEN"
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
	"$PY" -I -S "$SCEN" --out /run/netmem-out
echo "netmem-init: scenario exited with $?"
echo "NETMEM-PROBE-FATAL scenario exited"
sleep 1
poweroff -f

#!/bin/busybox sh
# /init of the QEMU guests that `cargo xtask test-kernel` boots (xtask/src/test_kernel/).
#
# Boots, reports what this kernel differs in, runs the integration test modules listed in
# /etc/retina-guest/suite (the modules of the test binary `cargo xtask test` runs on the
# host; the xtask decides which, and with which libtest arguments: `--exact` and the
# module's test names), reports each, and powers off. No test logic
# lives here. Protocol with the xtask on the serial console (xtask/src/test_kernel/report.rs):
#   RETINA-GUEST: FACT KEY VALUE...
#   RETINA-GUEST: RUN FILE          then the binary's output as `FILE| ...`
#   RETINA-GUEST: TEST FILE ok|failed|ignored NAME
#   RETINA-GUEST: DONE FILE rc=N seconds=S
#   RETINA-GUEST-RESULT: N test files run

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
/bin/busybox --install -s /bin
# Debian's static busybox runs its own applets before anything on PATH (SH_STANDALONE):
# its `ip` knows no netns. The tests search PATH and get iproute2's.
ip() { /usr/bin/ip "$@"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# The unified hierarchy, as on a pure cgroup-v2 node (the workload tests make pods in it).
# The memory controller delegated to children, as systemd does on a node.
if mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; then
    echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
else
    echo "RETINA-GUEST: no cgroup2 in this kernel"
fi
ln -s /run /var/run 2>/dev/null
ip link set lo up

say() { echo "RETINA-GUEST: $*"; }
fact() { say FACT "$1" "${2:-unknown}"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

say INFO "kernel $(uname -r) ($(cat /etc/retina-guest/package 2>/dev/null)), $(nproc) CPUs"

# Kernel modules the kernel package builds as modules, in dependency order.
if [ -s /etc/retina-guest/modules ]; then
    loaded=""
    while read -r ko; do
        if insmod "$ko" 2>/tmp/insmod.err; then
            loaded="$loaded $(basename "$ko" .ko)"
        else
            say INFO "insmod $ko: $(cat /tmp/insmod.err)"
        fi
    done </etc/retina-guest/modules
    say INFO "modules loaded:$loaded"
fi

# The NIC, up and addressed as on a node (QEMU's user network), for the driver statistics.
ip link set eth0 up 2>/dev/null
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null

# --- what this kernel differs in, as the agent sees it ---------------------------------
fact reasons "$(retina-agent reasons --format json 2>/dev/null | jq '.reasons | length')"
fact hook "$(retina-agent check 2>/dev/null | sed -n 's/.*attached to \(.*\) kfree_skb.*/\1/p')"
fact softnet-columns "$(head -n 1 /proc/net/softnet_stat | wc -w)"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
fmt=/sys/kernel/tracing/events/skb/kfree_skb/format
fact kfree-skb-fields "$(sed -n 's/.*field:[^;]* \**\([a-z_]*\);.*/\1/p' $fmt 2>/dev/null | grep -v '^common_' | tr '\n' ' ')"
umount /sys/kernel/tracing 2>/dev/null

# --- the test binaries -----------------------------------------------------------------
# Nothing else is mounted: the tests mount tracefs or bpffs themselves where they need them.
export RETINA_AGENT_BIN=/usr/bin/retina-agent
# The OTLP collector of the export tests (tests/src/rotel.rs), from the `rotel` wheel.
export RETINA_ROTEL_AGENT=/usr/bin/rotel-agent
export RUST_BACKTRACE=1
limit=$(cat /etc/retina-guest/test-timeout)
mkdir -p /tmp/results
files=0
while read -r name bin args; do
    [ -n "$name" ] || continue
    files=$((files + 1))
    say RUN "$name"
    start=$(uptime_s)
    # shellcheck disable=SC2086 # $args is a list of libtest arguments
    (
        cd /tmp || exit 1
        timeout "$limit" "$bin" --test-threads=1 --show-output --logfile "/tmp/results/$name" $args </dev/null
        echo $? >"/tmp/results/$name.rc"
    ) 2>&1 | sed "s/^/$name| /"
    rc=$(cat "/tmp/results/$name.rc" 2>/dev/null || echo none)
    [ -f "/tmp/results/$name" ] && sed "s/^/RETINA-GUEST: TEST $name /" "/tmp/results/$name"
    say DONE "$name" "rc=$rc" "seconds=$(awk -v s="$start" '{printf "%.1f", $1 - s}' /proc/uptime)"
done </etc/retina-guest/suite

say INFO "guest uptime $(uptime_s) s"
echo "RETINA-GUEST-RESULT: $files test files run"
sync
poweroff -f
sleep 10

#!/bin/busybox sh
# /init of the QEMU guest that `cargo xtask test-kernel` boots (see xtask/src/test_kernel.rs).
#
# Runs on another kernel than the development machine's (by default Debian bookworm's 6.1
# cloud kernel) and checks the agent there: probe load and attach, drop counts and reason
# names (NO_SOCKET, NETFILTER_DROP) read from this kernel's BTF, names against the
# tracepoint's own format file, counts against the kernel's own tracepoint histogram,
# interface and NIC driver statistics, and the degraded modes.
#
# Protocol with the xtask (serial console): one line per check,
#   RETINA-GUEST: PASS|FAIL|SKIP <name>[: detail]
# then `RETINA-GUEST-RESULT: N passed, M failed, K skipped`, then power off. Any other line
# is informational. Busybox ash + jq; the xtask put the binaries and their libraries here.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
/bin/busybox --install -s /bin
# Debian's static busybox runs its own applets before anything on PATH (SH_STANDALONE):
# its `ip` knows no netns. Programs the agent starts search PATH and get iproute2's.
ip() { /usr/bin/ip "$@"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ln -s /run /var/run 2>/dev/null
TRACE=/sys/kernel/tracing
ip link set lo up

PASSED=0
FAILED=0
SKIPPED=0
pass() { PASSED=$((PASSED + 1)); echo "RETINA-GUEST: PASS $1${2:+: $2}"; }
fail() { FAILED=$((FAILED + 1)); echo "RETINA-GUEST: FAIL $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "RETINA-GUEST: SKIP $1: $2"; }
info() { echo "RETINA-GUEST: INFO $*"; }

finish() {
    info "guest uptime $(cut -d' ' -f1 /proc/uptime) s"
    echo "RETINA-GUEST-RESULT: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    sync
    poweroff -f
    sleep 10
}

# Shows a file's last lines after a failure, indented.
show() { [ -s "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/    | /'; }

# jsum FILE METRIC FILTER: sum of the values of METRIC's points whose attributes ($a)
# satisfy the jq boolean FILTER.
jsum() {
    jq -r --arg m "$2" "[.metrics[] | select(.name == \$m) | .attributes as \$a
        | select($3) | .value] | add // 0" "$1"
}

# snap NAME ARGS...: `retina-agent snapshot --format json ARGS...`, stdout in
# /tmp/NAME.json, stderr in /tmp/NAME.err; returns the agent's exit status.
snap() {
    name=$1
    shift
    # A longer settle than the default 200 ms: emulated CPUs are slow to run softirqs.
    retina-agent snapshot --format json --settle 500ms "$@" >"/tmp/$name.json" 2>"/tmp/$name.err"
}

ino() { stat -L -c %i "/run/netns/$1"; }

# ---------------------------------------------------------------------------------------
info "kernel $(uname -r) ($(cat /etc/retina-guest/package 2>/dev/null)), $(nproc) CPUs"

# Kernel modules the kernel package builds as modules, in dependency order.
if [ -s /etc/retina-guest/modules ]; then
    loaded=""
    while read -r ko; do
        if insmod "$ko" 2>/tmp/insmod.err; then
            loaded="$loaded $(basename "$ko" .ko)"
        else
            info "insmod $ko: $(cat /tmp/insmod.err)"
        fi
    done </etc/retina-guest/modules
    info "modules loaded:$loaded"
fi

# --- 1. environment: what the agent needs from this kernel -----------------------------
t=kernel-has-btf-and-drop-reasons
if [ ! -r /sys/kernel/btf/vmlinux ]; then
    fail $t "/sys/kernel/btf/vmlinux missing (CONFIG_DEBUG_INFO_BTF)"
elif [ ! -r $TRACE/events/skb/kfree_skb/format ]; then
    fail $t "tracefs has no skb/kfree_skb event"
elif ! grep -q 'field:enum skb_drop_reason reason' $TRACE/events/skb/kfree_skb/format; then
    fail $t "kfree_skb has no reason field: $(grep field: $TRACE/events/skb/kfree_skb/format | tr '\n' ' ')"
else
    pass $t "$(grep -o 'field:enum skb_drop_reason reason;[^;]*;' $TRACE/events/skb/kfree_skb/format)"
fi

# --- 2. load and attach; nothing degraded ------------------------------------------------
t=probe-loads-and-attaches
start=$(cut -d' ' -f1 /proc/uptime)
if snap load --duration 1s; then
    degraded=$(jq -c '.degraded' /tmp/load.json)
    if [ "$degraded" = "[]" ] && grep -q '"retina.drop.map.capacity"' /tmp/load.json; then
        pass $t "snapshot started in $(awk -v s="$start" '{printf "%.1f s", $1 - s - 1}' /proc/uptime) (incl. the 1 s window)"
    else
        fail $t "degraded: $degraded"
        show /tmp/load.err
    fi
else
    fail $t "retina-agent snapshot failed"
    show /tmp/load.err 30
fi
if grep -qi 'warn\|error' /tmp/load.err; then
    info "agent warnings on this kernel:"
    show /tmp/load.err
fi

# --- 3. reason names: BTF vs the tracepoint's own format file ----------------------------
t=reason-names-match-tracepoint-format
if retina-agent reasons --format json >/tmp/reasons.json 2>/tmp/reasons.err; then
    # print fmt: ... __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, ... }, ...)
    sed -n 's/.*__print_symbolic(REC->reason,//p' $TRACE/events/skb/kfree_skb/format |
        tr '{' '\n' | sed -n 's/^ *\([0-9x]*\), *"\([A-Z0-9_]*\)".*/\1 \2/p' >/tmp/format.txt
    jq -r '.reasons[] | "\(.value) \(.name)"' /tmp/reasons.json >/tmp/ours.txt
    total=$(wc -l </tmp/format.txt)
    bad=""
    while read -r value name; do
        case $value in 0x*) value=$(printf %d "$value") ;; esac
        grep -qx "$value $name" /tmp/ours.txt || bad="$bad $value=$name"
    done </tmp/format.txt
    if [ "$total" -lt 20 ]; then
        fail $t "parsed only $total reasons from the format file"
        show $TRACE/events/skb/kfree_skb/format 5
    elif [ -n "$bad" ]; then
        fail $t "agent names differ from the tracepoint format for:$bad"
    else
        pass $t "$total reasons; NO_SOCKET=$(awk '$2=="NO_SOCKET"{print $1}' /tmp/ours.txt) NETFILTER_DROP=$(awk '$2=="NETFILTER_DROP"{print $1}' /tmp/ours.txt) NOT_SPECIFIED=$(awk '$2=="NOT_SPECIFIED"{print $1}' /tmp/ours.txt)"
    fi
    info "first reasons on this kernel: $(head -n 6 /tmp/ours.txt | tr '\n' ' ')"
else
    fail $t "retina-agent reasons failed"
    show /tmp/reasons.err
fi

# --- 4. NO_SOCKET: UDP to a closed port in a namespace -----------------------------------
t=udp-closed-port-counts-no-socket
ip netns add t1 && ip -n t1 link set lo up
i1=$(ino t1)
if snap nosock -- ip netns exec t1 traffic udp 127.0.0.1:9 1000 32; then
    f='$a["drop.reason"] == "NO_SOCKET" and ($a["network.namespace.inode"]|tostring) == "'$i1'"'
    count=$(jsum /tmp/nosock.json retina.drop.count "$f")
    bytes=$(jsum /tmp/nosock.json retina.drop.bytes "$f")
    full=$(jsum /tmp/nosock.json retina.drop.count "$f"' and $a["network.interface.name"] == "lo" and $a["network.type"] == "ipv4" and $a["network.namespace.name"] == "t1"')
    if [ "$count" = 1000 ] && [ "$bytes" = 40000 ] && [ "$full" = 1000 ]; then
        pass $t "1000 drops, 40000 bytes, lo in netns t1"
    else
        fail $t "count $count (want 1000), bytes $bytes (want 40000), with lo/ipv4/t1 attributes $full"
        jq -c '.metrics[] | select(.name == "retina.drop.count")' /tmp/nosock.json | head -n 10 | sed 's/^/    | /'
    fi
else
    fail $t "snapshot failed"
    show /tmp/nosock.err
fi

# --- 5. NETFILTER_DROP: an nftables rule drops UDP ---------------------------------------
t=nftables-drop-counts-netfilter-drop
ip netns add t2 && ip -n t2 link set lo up
i2=$(ino t2)
if ! ip netns exec t2 nft 'add table inet retina_test; add chain inet retina_test input { type filter hook input priority 0; }; add rule inet retina_test input udp dport 9999 drop' 2>/tmp/nft.err; then
    fail $t "nft failed: $(cat /tmp/nft.err)"
elif snap nft -- ip netns exec t2 traffic udp 127.0.0.1:9999 500 32; then
    f='($a["network.namespace.inode"]|tostring) == "'$i2'"'
    nf=$(jsum /tmp/nft.json retina.drop.count "$f"' and $a["drop.reason"] == "NETFILTER_DROP"')
    nfb=$(jsum /tmp/nft.json retina.drop.bytes "$f"' and $a["drop.reason"] == "NETFILTER_DROP"')
    ns=$(jsum /tmp/nft.json retina.drop.count "$f"' and $a["drop.reason"] == "NO_SOCKET"')
    if [ "$nf" = 500 ] && [ "$nfb" = 30000 ] && [ "$ns" = 0 ]; then
        pass $t "500 drops, 30000 bytes, no NO_SOCKET"
    else
        fail $t "NETFILTER_DROP $nf (want 500), bytes $nfb (want 30000), NO_SOCKET $ns (want 0)"
        jq -c '.metrics[] | select(.name == "retina.drop.count")' /tmp/nft.json | head -n 10 | sed 's/^/    | /'
    fi
else
    fail $t "snapshot failed"
    show /tmp/nft.err
fi

# --- 6. veth: host-side drops carry the host interface; netdev counters agree ------------
t=veth-host-side-drops-and-netdev
ip netns add t3
ip link add rv0 type veth peer name rv0p
ip link set rv0p netns t3
sysctl -qw net.ipv6.conf.rv0.disable_ipv6=1
ip netns exec t3 sysctl -qw net.ipv6.conf.rv0p.disable_ipv6=1
ip addr add 10.231.2.1/24 dev rv0
ip -n t3 addr add 10.231.2.2/24 dev rv0p
ip link set rv0 up
ip -n t3 link set rv0p up
ip neigh replace 10.231.2.2 lladdr "$(ip netns exec t3 cat /sys/class/net/rv0p/address)" dev rv0 nud permanent
ip -n t3 neigh replace 10.231.2.1 lladdr "$(cat /sys/class/net/rv0/address)" dev rv0p nud permanent
host_ino=$(stat -L -c %i /proc/self/ns/net)
rv0_index=$(cat /sys/class/net/rv0/ifindex)
if snap veth -- ip netns exec t3 traffic udp 10.231.2.1:9 300 32; then
    f='$a["drop.reason"] == "NO_SOCKET" and $a["network.interface.name"] == "rv0" and ($a["network.interface.index"]|tostring) == "'$rv0_index'" and ($a["network.namespace.inode"]|tostring) == "'$host_ino'"'
    count=$(jsum /tmp/veth.json retina.drop.count "$f")
    rx=$(jsum /tmp/veth.json system.network.packet.count '$a["network.interface.name"] == "rv0" and $a["network.io.direction"] == "receive"')
    if [ "$count" = 300 ] && [ "$rx" = 300 ]; then
        pass $t "300 NO_SOCKET drops on rv0 (ifindex $rv0_index, host netns); netdev rx 300"
    else
        fail $t "drops on rv0 $count (want 300), netdev rx packets $rx (want 300)"
        jq -c '.metrics[] | select(.name == "retina.drop.count")' /tmp/veth.json | head -n 10 | sed 's/^/    | /'
    fi
else
    fail $t "snapshot failed"
    show /tmp/veth.err
fi

# --- 7. every reason the kernel's own tracepoint saw, the agent counted ------------------
# A tracefs histogram on skb:kfree_skb, keyed by reason, runs inside the agent's window: for
# each reason it lists, the agent must count at least as many drops (more only from
# background drops outside the histogram's shorter window). Catches reasons the probe
# filters out or misreads on this kernel.
t=agent-counts-match-kernel-histogram
if [ ! -w $TRACE/events/skb/kfree_skb/trigger ]; then
    skip $t "no tracefs histogram triggers (CONFIG_HIST_TRIGGERS)"
else
    cat >/tmp/workload.sh <<'EOF'
ip() { /usr/bin/ip "$@"; }
echo 'hist:keys=reason:vals=hitcount' >/sys/kernel/tracing/events/skb/kfree_skb/trigger
ip netns exec t1 traffic udp 127.0.0.1:9 200 32
ip netns exec t2 traffic udp 127.0.0.1:9999 100 32
ip netns exec t3 traffic udp 10.231.2.1:9 50 32
# TCP SYN to a closed port, and a datagram to a destination nobody here routes.
ip netns exec t1 nc -w 1 127.0.0.1 1 </dev/null 2>/dev/null
ip netns exec t3 ip route add 10.99.0.0/16 via 10.231.2.1 2>/dev/null
ip netns exec t3 traffic udp 10.99.1.1:9 20 32
# ARP requests for a loopback address: 6.1's arp_process() frees them with plain
# kfree_skb(), i.e. NOT_SPECIFIED (value 1 there, 2 on 6.2+).
arping -c 5 -w 2 -I rv0 -s 10.231.2.1 127.0.0.1 >/dev/null 2>&1
sleep 0.3
cat /sys/kernel/tracing/events/skb/kfree_skb/hist >/tmp/hist.txt
echo '!hist:keys=reason:vals=hitcount' >/sys/kernel/tracing/events/skb/kfree_skb/trigger
EOF
    if snap hist -- sh /tmp/workload.sh; then
        # Lines like `{ reason:          2 } hitcount:        200`.
        sed -n 's/^{ reason: *\([0-9]*\) *} hitcount: *\([0-9]*\).*/\1 \2/p' /tmp/hist.txt >/tmp/hist.pairs
        jq -r '[.metrics[] | select(.name == "retina.drop.count")] | group_by(.attributes["drop.reason"])[]
            | "\(.[0].attributes["drop.reason"]) \(map(.value) | add)"' /tmp/hist.json >/tmp/agent.pairs
        bad=""
        seen=""
        while read -r value hits; do
            name=$(awk -v v="$value" '$1 == v {print $2}' /tmp/ours.txt)
            [ -n "$name" ] || name="UNKNOWN_$value"
            got=$(awk -v n="$name" '$1 == n {print $2}' /tmp/agent.pairs)
            seen="$seen $name($value)=$hits/${got:-0}"
            [ "${got:-0}" -ge "$hits" ] || bad="$bad $name($value): kernel $hits, agent ${got:-0};"
        done </tmp/hist.pairs
        if [ ! -s /tmp/hist.pairs ]; then
            fail $t "empty histogram"
            show /tmp/hist.txt
        elif [ -n "$bad" ]; then
            fail $t "agent missed drops:$bad"
        else
            pass $t "kernel/agent per reason:$seen"
        fi
    else
        fail $t "snapshot failed"
        show /tmp/hist.err
    fi
fi

# --- 8. NIC driver statistics against ethtool -S -----------------------------------------
# ethtool -S NAME as "stat value" lines, per-queue names folded the way the agent's default
# `per_queue = "sum"` does (rx_queue_0_packets -> rx_queue_packets, summed over queues).
ethtool_sum() {
    ethtool -S "$1" | sed -n 's/^ *\([^:]*\): *\([0-9]*\)$/\1 \2/p' |
        sed 's/^\(rx\|tx\)_queue_[0-9]*_/\1_queue_/' |
        awk '{s[$1] += $2} END {for (k in s) print k, s[k]}'
}
t=nic-driver-stats-match-ethtool
ip link set eth0 up 2>/dev/null
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null
traffic udp 10.0.2.2:9 10 32 2>/dev/null
sleep 1
if ! snap nic --cumulative --duration 1s; then
    fail $t "snapshot failed"
    show /tmp/nic.err
elif ! grep -q '"retina.nic.driver.stat"' /tmp/nic.json; then
    skip $t "this agent build has no retina.nic.driver.stat (ethtool collector)"
else
    msg=""
    bad=""
    for dev in eth0 rv0; do
        ethtool_sum $dev >/tmp/ethtool.$dev 2>/dev/null
        jq -r --arg d "$dev" '.metrics[] | select(.name == "retina.nic.driver.stat"
            and .attributes["network.interface.name"] == $d)
            | "\(.attributes["nic.stat.name"]) \(.value)"' /tmp/nic.json >/tmp/agent.$dev
        n=0
        while read -r stat value; do
            want=$(awk -v s="$stat" '$1 == s {print $2}' /tmp/ethtool.$dev)
            [ -n "$want" ] || continue
            n=$((n + 1))
            [ "$want" = "$value" ] || bad="$bad $dev/$stat: agent $value, ethtool $want;"
        done </tmp/agent.$dev
        [ "$n" -gt 0 ] || bad="$bad $dev: no statistic in common with ethtool -S ($(wc -l </tmp/agent.$dev) from the agent);"
        msg="$msg $dev($(ethtool -i $dev | sed -n 's/^driver: //p')): $n stats equal;"
    done
    if [ -n "$bad" ]; then
        fail $t "$bad"
    else
        pass $t "$msg"
    fi
fi

# --- 9. `retina-agent check` agrees this kernel can run the agent ------------------------
t=agent-check-passes
if ! retina-agent check --help >/dev/null 2>&1; then
    skip $t "this agent build has no \`check\` command"
elif retina-agent check >/tmp/check.out 2>&1; then
    pass $t "$(tail -n 1 /tmp/check.out)"
    grep -v '^ *hint:' /tmp/check.out | sed 's/^/    | /'
else
    fail $t "$(tail -n 1 /tmp/check.out)"
    show /tmp/check.out 30
fi

# --- 10. degraded modes: what is missing is named, the rest keeps running -----------------
t=missing-btf-degrades-drops-only
if retina-agent --btf /nonexistent/vmlinux snapshot --format json --duration 200ms >/tmp/nobtf.json 2>/tmp/nobtf.err; then
    reason=$(jq -r '.degraded[] | select(.collector == "drops") | .reason' /tmp/nobtf.json)
    others=$(jq '[.metrics[] | select(.name | startswith("retina.drop") | not)] | length' /tmp/nobtf.json)
    if [ -n "$reason" ] && [ "$others" -gt 0 ] && grep -q 'cannot read BTF' /tmp/nobtf.err; then
        pass $t "drops degraded ($reason); $others other points"
    else
        fail $t "degraded drops reason '$reason', other points $others"
        show /tmp/nobtf.err
    fi
else
    fail $t "agent exited non-zero without BTF"
    show /tmp/nobtf.err
fi

t=without-capabilities-degrades-drops-only
if su -s /bin/sh nobody -c 'retina-agent snapshot --format json --duration 200ms' >/tmp/nocap.json 2>/tmp/nocap.err; then
    reason=$(jq -r '.degraded[] | select(.collector == "drops") | .reason' /tmp/nocap.json)
    case $reason in
    *CAP_BPF*) pass $t "$reason" ;;
    *)
        fail $t "degraded drops reason '$reason'"
        show /tmp/nocap.err
        ;;
    esac
else
    fail $t "agent exited non-zero as nobody"
    show /tmp/nocap.err
fi

finish

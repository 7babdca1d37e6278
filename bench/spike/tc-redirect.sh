#!/bin/bash
# Feasibility measurement for docs/fastpath.md (not part of the test suite).
# usage (root): bench/spike/tc-redirect.sh on|off kernel|tc|peer
#   on|off     offloads on the four veths (TSO/GSO/GRO/checksums)
#   kernel     the firewall namespace forwards with the kernel (no nft;
#              NFT=1: with an nftables forward chain and conntrack, three
#              rules, as palisade-bench forward's kernel peer)
#   tc         a tc ingress program (tc-redirect.c) rewrites the Ethernet
#              header, decrements the TTL and redirects to the other port
#   peer       the same, redirected straight to the ingress of the other
#              port's veth peer (bpf_redirect_peer), skipping a queue
# env: TAP=1 also keeps an AF_PACKET socket on each port whose filter
#      rejects everything (what Palisade's sockets would cost);
#      IPERF="-u -b 0 -l 18" for 64-byte UDP; SECS (3);
#      PERF=FILE: `perf record -a -g` for 2 s of the transfer into FILE.
# needs: clang, libbpf-dev, iperf3, tcpdump (TAP), ethtool.
set -e
OFF=${1:-on}; MODE=${2:-tc}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
S=spk$$
for n in src fw dst; do ip netns add $S-$n; ip -n $S-$n link set lo up; done
cleanup() { for n in src fw dst; do ip netns del $S-$n; done; rm -rf "$TMP"; }
trap cleanup EXIT
ip link add eth0 netns $S-src address 02:00:00:00:00:01 type veth peer name a0 netns $S-fw address 02:00:00:00:00:0a
ip link add b0 netns $S-fw address 02:00:00:00:00:0b type veth peer name eth0 netns $S-dst address 02:00:00:00:00:02
for x in "src eth0" "fw a0" "fw b0" "dst eth0"; do set -- $x
  if [ "$OFF" = off ]; then ip netns exec $S-$1 ethtool -K $2 tso off gso off gro off tx off rx off >/dev/null; fi
  ip -n $S-$1 link set $2 up; done
ip -n $S-src addr add 198.18.0.1/24 dev eth0; ip -n $S-src route add default via 198.18.0.254
ip -n $S-dst addr add 198.19.0.1/24 dev eth0; ip -n $S-dst route add default via 198.19.0.254
ip -n $S-src neigh add 198.18.0.254 lladdr 02:00:00:00:00:0a dev eth0
ip -n $S-dst neigh add 198.19.0.254 lladdr 02:00:00:00:00:0b dev eth0
ip -n $S-fw addr add 198.18.0.254/24 dev a0; ip -n $S-fw addr add 198.19.0.254/24 dev b0
if [ "$MODE" = kernel ]; then ip netns exec $S-fw sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$NFT" ]; then ip netns exec $S-fw nft -f - <<'N'
table inet f {
  chain fw1 {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr 198.18.0.0/24 tcp dport 5201 ct state new accept
    ip saddr 198.18.0.0/24 udp dport 5201 ct state new accept
  }
}
N
  fi
else
  EXTRA=; if [ "$MODE" = peer ]; then EXTRA=-DPEER; fi
  A=$(ip -n $S-fw -o link show a0 | cut -d: -f1); B=$(ip -n $S-fw -o link show b0 | cut -d: -f1)
  INC=-I/usr/include/$(gcc -dumpmachine)
  clang -O2 -g -target bpf $INC $EXTRA -DOUT_IF=$B -DDMAC=2,0,0,0,0,2 -DSMAC=2,0,0,0,0,0xb -c "$HERE/tc-redirect.c" -o "$TMP/ab.o"
  clang -O2 -g -target bpf $INC $EXTRA -DOUT_IF=$A -DDMAC=2,0,0,0,0,1 -DSMAC=2,0,0,0,0,0xa -c "$HERE/tc-redirect.c" -o "$TMP/ba.o"
  ip netns exec $S-fw tc qdisc add dev a0 clsact; ip netns exec $S-fw tc filter add dev a0 ingress bpf da obj "$TMP/ab.o" sec tc
  ip netns exec $S-fw tc qdisc add dev b0 clsact; ip netns exec $S-fw tc filter add dev b0 ingress bpf da obj "$TMP/ba.o" sec tc
fi
if [ -n "$TAP" ]; then
  ip netns exec $S-fw tcpdump -i a0 -w /dev/null udp port 9 2>/dev/null & T1=$!
  ip netns exec $S-fw tcpdump -i b0 -w /dev/null udp port 9 2>/dev/null & T2=$!
  sleep 1
fi
ip netns exec $S-dst iperf3 -s -D -1 -p 5201 >/dev/null 2>&1; sleep 0.3
if [ -n "$PERF" ]; then (sleep 1; perf record -a -g -o "$PERF" -- sleep 2 >/dev/null 2>&1) & fi
ip netns exec $S-src iperf3 -c 198.19.0.1 -t ${SECS:-3} $IPERF 2>&1 | grep receiver
wait
if [ -n "$TAP" ]; then kill $T1 $T2; fi

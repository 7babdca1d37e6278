#!/bin/bash
# A burst of new flows through Palisade (not part of the test suite):
# 30,000 UDP datagrams, each to another port (a new state each), sent as
# fast as python can from one namespace to another through a Palisade
# router; prints how many states were made and how many frames the
# receive ring dropped (ring_full).
# usage (root): bench/spike/new-flow-burst.sh
# env: BIN (palisade binary, default target/release/palisade),
#      W (workers, 1), RING (palisade.toml's ring-frames; default 4096).
P=pqx$$
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/palisade}
D_=$(mktemp -d); cd "$D_"
for n in src fw dst; do ip netns add $P-$n; done
trap 'kill $D 2>/dev/null; sleep 0.3; for n in src fw dst; do ip netns del $P-$n; done; rm -rf "$D_"' EXIT
ip link add eth0 netns $P-src type veth peer name a0 netns $P-fw
ip link add b0 netns $P-fw type veth peer name eth0 netns $P-dst
for x in "src eth0" "fw a0" "fw b0" "dst eth0" "src lo" "fw lo" "dst lo"; do set -- $x; ip -n $P-$1 link set $2 up; done
ip -n $P-src addr add 198.18.0.1/24 dev eth0; ip -n $P-src route add default via 198.18.0.254
ip -n $P-dst addr add 198.19.0.1/24 dev eth0; ip -n $P-dst route add default via 198.19.0.254
cat > palisade.toml <<T
pf = "pf.conf"
control = "$D_/s.sock"
workers = ${W:-1}
${RING:+ring-frames = $RING}
[host]
enabled = false
[[port]]
name = "a0"
[[port]]
name = "b0"
[[interface]]
name = "a0"
port = "a0"
addresses = ["198.18.0.254/24"]
[[interface]]
name = "b0"
port = "b0"
addresses = ["198.19.0.254/24"]
T
echo "pass" > pf.conf
ip netns exec $P-fw $BIN run -c palisade.toml > d.log 2>&1 & D=$!
sleep 1.5
ip netns exec $P-src ping -c1 -W2 198.19.0.1 >/dev/null
ip netns exec $P-src python3 -c '
import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
t=time.time()
for p in range(1,30001): s.sendto(b"x",("198.19.0.1",p))
print("sent in %.3f s" % (time.time()-t))
'
sleep 2
$BIN show info -s $D_/s.sock | grep -E "inserts|ring_full"

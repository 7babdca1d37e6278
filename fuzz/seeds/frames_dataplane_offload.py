#!/usr/bin/env python3
"""A seed for the frames_dataplane fuzz target that reaches the
super-packet path: a TCP handshake routed from wan to vlan7 (with the ARP
answers it waits for), then a super-packet (port byte 0x42: port 0, offload) of three
segments, then one past the window. Writes fuzz/corpus/frames_dataplane/offload-seed.

Usage: /usr/bin/python3 fuzz/seeds/frames_dataplane_offload.py  (Debian's python3-scapy)
"""
import os
from scapy.all import ARP, IP, TCP, Dot1Q, Ether, Raw

WAN = "02:00:00:00:00:01"   # eth0's MAC in the target
VLAN7 = "02:00:00:00:00:02"  # eth1's
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:aa", "02:00:00:00:00:bb"
C, S = "198.51.100.9", "192.0.2.10"


def rec(port, frame):
    b = bytes(frame)
    return bytes([port]) + len(b).to_bytes(2, "big") + b


def to_server(flags, seq, ack, data=b""):
    return Ether(src=CLIENT_MAC, dst=WAN) / IP(src=C, dst=S) / TCP(
        sport=40000, dport=8080, flags=flags, seq=seq, ack=ack, window=65535) / Raw(data)


out = b""
out += rec(0, to_server("S", 1000, 0))
out += rec(1, Ether(src=SERVER_MAC, dst=VLAN7) / Dot1Q(vlan=7) /
           ARP(op=2, hwsrc=SERVER_MAC, psrc=S, hwdst=VLAN7, pdst="192.0.2.1"))
out += rec(1, Ether(src=SERVER_MAC, dst=VLAN7) / Dot1Q(vlan=7) / IP(src=S, dst=C) /
           TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001, window=65535))
out += rec(0, Ether(src=CLIENT_MAC, dst=WAN) /
           ARP(op=2, hwsrc=CLIENT_MAC, psrc="203.0.113.1", hwdst=WAN, pdst="203.0.113.2"))
out += rec(0, to_server("A", 1001, 5001))
# 3,900 bytes: the frame is 3,954 long, so the target cuts at 536 + 882.
out += rec(0x42, to_server("PA", 1001, 5001, bytes(range(256)) * 15 + bytes(60)))
out += rec(0x42, to_server("PA", 901001, 5001, bytes(3900)))
d = os.path.join(os.path.dirname(__file__), "..", "corpus", "frames_dataplane")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "offload-seed"), "wb") as f:
    f.write(out)
print(len(out), "bytes")

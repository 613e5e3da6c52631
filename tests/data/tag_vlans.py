#!/usr/bin/env python3
"""Inserts VLAN tags into an untagged Ethernet pcap, as libpcap records tagged frames.

    tag_vlans.py UNTAGGED.pcap TAGGED.pcap

make-fixtures.sh uses it only when the kernel has no 802.1Q support (no VLAN sub-interfaces):
IPv4 and ARP frames get an 802.1Q tag for VLAN 42, IPv6 frames an 802.1ad tag for VLAN 100
followed by an 802.1Q tag for VLAN 43 (QinQ), other frames stay untagged. The tags go right
after the MAC addresses, where libpcap reinserts the tag a NIC or veth stripped, and the
record lengths grow by the tag bytes. Standard library only.
"""

import struct
import sys

ETHERNET = 1
SINGLE = struct.pack("!HH", 0x8100, 42)
QINQ = struct.pack("!HHHH", 0x88A8, 100, 0x8100, 43)
TAGS = {0x0800: SINGLE, 0x0806: SINGLE, 0x86DD: QINQ}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tag_vlans.py UNTAGGED.pcap TAGGED.pcap")
    data = open(sys.argv[1], "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        sys.exit("tag_vlans.py: %s is not a classic pcap file" % sys.argv[1])
    header = data[:24]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0xFFFF
    if linktype != ETHERNET:
        sys.exit("tag_vlans.py: link type %d, expected Ethernet" % linktype)
    out = [header]
    offset = 24
    tagged = 0
    while offset + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack(order + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        if len(frame) < caplen:
            sys.exit("tag_vlans.py: %s ends inside a record" % sys.argv[1])
        offset += 16 + caplen
        tags = TAGS.get(struct.unpack("!H", frame[12:14])[0], b"") if len(frame) >= 14 else b""
        if tags:
            frame = frame[:12] + tags + frame[12:]
            tagged += 1
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), origlen + len(tags)))
        out.append(frame)
    if offset != len(data):
        sys.exit("tag_vlans.py: %s ends inside a record header" % sys.argv[1])
    with open(sys.argv[2], "wb") as f:
        f.write(b"".join(out))
    print("tag_vlans.py: tagged %d frames" % tagged)


if __name__ == "__main__":
    main()

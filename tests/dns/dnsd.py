#!/usr/bin/python3
"""A tiny authoritative DNS server for the doctor tests (standard library only).

Serves TXT and CNAME records from a JSON zone file over UDP on 127.0.0.1:
  {"example.com": [["TXT", "v=spf1 include:x ~all"]], "sel._domainkey.example.com": [["CNAME", "t.example.net"]]}
A name in the zone without the asked type gets NOERROR with no answer (NODATA), a name not in
the zone NXDOMAIN, and a TXT question for a CNAME gets the CNAME (the chain inside the zone is
followed). `--servfail` answers SERVFAIL to everything. The chosen port goes to --port-file.
"""
import argparse
import json
import socket
import struct

T_CNAME, T_TXT = 5, 16
TYPES = {"CNAME": T_CNAME, "TXT": T_TXT}


def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\0"


def rdata(rtype, value):
    if rtype == T_TXT:
        b = value.encode()
        chunks = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
        return b"".join(bytes([len(c)]) + c for c in chunks)
    return encode_name(value)


def parse_question(msg):
    i, labels = 12, []
    while i < len(msg) and msg[i] != 0:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, = struct.unpack("!H", msg[i + 1:i + 3])
    return ".".join(labels).lower(), qtype, msg[12:i + 5]


def answer(zone, msg, servfail):
    qid, flags = struct.unpack("!HH", msg[:4])
    name, qtype, question = parse_question(msg)
    rd = flags & 0x0100
    rcode, answers, owner, seen = 0, [], name, 0
    if servfail:
        rcode = 2
    else:
        while seen < 8:
            seen += 1
            recs = zone.get(owner)
            if recs is None:
                if not answers:
                    rcode = 3
                break
            cname = [v for t, v in recs if t == "CNAME"]
            if cname and qtype != T_CNAME:
                answers.append((owner, T_CNAME, cname[0]))
                owner = cname[0].strip(".").lower()
                continue
            answers += [(owner, TYPES[t], v) for t, v in recs if TYPES[t] == qtype]
            break
    header = struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x0080 | rcode, 1, len(answers), 0, 0)
    body = b""
    for owner, rtype, value in answers:
        rd_ = rdata(rtype, value)
        body += encode_name(owner) + struct.pack("!HHIH", rtype, 1, 60, len(rd_)) + rd_
    return header + question + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zone", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--servfail", action="store_true")
    a = ap.parse_args()
    with open(a.zone) as f:
        zone = {k.strip(".").lower(): v for k, v in json.load(f).items()}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    import os
    os.rename(tmp, a.port_file)
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(zone, msg, a.servfail), peer)
        except (IndexError, struct.error, UnicodeError, KeyError):
            pass  # a malformed question: no answer


if __name__ == "__main__":
    main()

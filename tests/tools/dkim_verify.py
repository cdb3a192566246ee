"""Check a message's DKIM signatures with dkimpy (PyPI), a verifier independent of relayq.

Usage: <venv>/bin/python dkim_verify.py MESSAGE RECORDS.json
RECORDS.json maps names to TXT records: {"sel._domainkey.example.com": "v=DKIM1; k=rsa; p=..."}.
No DNS is asked (dkimpy's dnsfunc). Prints one line per signature, "pass d=.. s=.. a=.." or
"fail d=.. s=..: why"; exits 0 when there is at least one signature and all pass, else 1.
Ed25519 (RFC 8463) needs PyNaCl; scripts/deps.sh installs both into the test venv.
"""
import io
import json
import logging
import sys

import dkim


def main():
    msg = open(sys.argv[1], "rb").read()
    with open(sys.argv[2]) as f:
        records = {k.lower().rstrip("."): v for k, v in json.load(f).items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        rec = records.get(name.lower().rstrip("."))
        return rec.encode() if rec is not None else None

    d = dkim.DKIM(msg)
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    if not sigs:
        print("fail: no DKIM-Signature field")
        return 1
    ok = True
    for idx, value in enumerate(sigs):
        tags = dict(
            t.strip().split("=", 1) for t in value.decode().split(";") if "=" in t
        )
        who = " ".join(f"{k}={tags.get(k, '?').strip()}" for k in ("d", "s", "a"))
        log = io.StringIO()
        logger = logging.getLogger(f"dkim{idx}")
        logger.addHandler(logging.StreamHandler(log))
        logger.setLevel(logging.DEBUG)
        v = dkim.DKIM(msg, logger=logger)
        try:
            good = v.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            good, log = False, io.StringIO(str(e))
        if good:
            print(f"pass {who}")
        else:
            ok = False
            why = " | ".join(l for l in log.getvalue().splitlines() if l.strip())[-400:]
            print(f"fail {who}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

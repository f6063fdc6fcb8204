"""Exercises mailpolicy.py against a running daemon: `python3 check_client.py SOCKET`.

Prints one JSON object with what the daemon answered, for the Rust test to compare with the
answers of the Rust clients; exits non-zero on any failure.
"""

import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from mailpolicy import Client, MailpolicyError, raw, record  # noqa: E402


def main(path):
    out = {}
    with Client(path) as c:
        assert c.ping() == "pong"
        assert c.hello()["version"].startswith("2.")
        # A 1.x JSON client is still served (JSON only gained `raw`).
        assert c.hello("1.0")["version"].startswith("2.")
        # Another major: the daemon answers the error and closes the connection; the next
        # call reconnects by itself.
        try:
            c.hello("3.0")
            raise AssertionError("hello 3.0 was accepted")
        except MailpolicyError as e:
            assert e.code == "unsupported_version", e.code
        assert c.ping() == "pong"
        spf = c.spf("example.test")
        out["spf"] = record(spf)
        out["spf_raw"] = raw(spf)
        assert out["spf_raw"].startswith("v=spf1 "), out["spf_raw"]
        d = c.dmarc("sub.example.test")
        out["dmarc_found_at"] = d["found_at"]
        out["dmarc_applied"] = d["applied"]
        out["dmarc_raw"] = raw(d)
        assert out["dmarc_raw"].startswith("v=DMARC1"), out["dmarc_raw"]
        key = c.dkim_key("s1", "example.test")
        out["dkim_bits"] = record(key)["key_bits"]
        out["dkim_raw"] = raw(key)
        assert out["dkim_raw"].startswith("v=DKIM1"), out["dkim_raw"]
        nothing = c.spf("sub.example.test")
        out["no_record_raw"] = raw(nothing)
        assert out["no_record_raw"] is None, nothing
        try:
            c.spf("a..b")
            raise AssertionError("a bad name was accepted")
        except MailpolicyError as e:
            out["bad_name"] = e.code
        out["stats_upstream"] = sum(n for _, n in c.stats()["upstream"])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])

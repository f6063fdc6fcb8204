"""Exercises mailpolicy.py against a running daemon: `python3 check_client.py SOCKET`.

Prints one JSON object with what the daemon answered, for the Rust test to compare with the
answers of the Rust clients; exits non-zero on any failure.
"""

import json
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from mailpolicy import Client, MailpolicyError, record  # noqa: E402


def main(path):
    out = {}
    with Client(path) as c:
        assert c.ping() == "pong"
        assert c.hello()["version"].startswith("1.")
        spf = c.spf("example.test")
        out["spf"] = record(spf)
        d = c.dmarc("sub.example.test")
        out["dmarc_found_at"] = d["found_at"]
        out["dmarc_applied"] = d["applied"]
        out["dkim_bits"] = record(c.dkim_key("s1", "example.test"))["key_bits"]
        try:
            c.spf("a..b")
            raise AssertionError("a bad name was accepted")
        except MailpolicyError as e:
            out["bad_name"] = e.code
        out["stats_upstream"] = sum(n for _, n in c.stats()["upstream"])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])

"""A stdlib-only client for mailpolicyd's JSON socket protocol.

    from mailpolicy import Client
    with Client("/run/mailpolicyd/mailpolicyd.sock") as c:
        answer = c.dmarc("example.com")      # the DMARC policy for mail From: example.com
        spf = c.spf("example.com")
        key = c.dkim_key("s1", "example.com")
        text = raw(key)                      # "v=DKIM1; k=rsa; p=..." as published, or None

Each call sends one newline-delimited JSON request and returns the reply object (a dict);
an error answer raises MailpolicyError with its stable code. The connection is reopened once
if the daemon restarted. Thread-safety: one Client per thread.
"""

import itertools
import json
import socket

__all__ = ["Client", "MailpolicyError", "PROTOCOL_VERSION", "raw", "record"]

# The protocol version this client announces in hello. It speaks JSON lines, where version 2
# only added `raw` to policy answers; the daemon also accepts "1.x" from JSON clients.
PROTOCOL_VERSION = "2.0"


class MailpolicyError(Exception):
    """An error answer from the daemon: `code` is stable, `message` is for people."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock = None
        self._file = None
        self._connect()

    def _connect(self):
        self.close()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(self.timeout)
        self._sock.connect(self.path)
        self._file = self._sock.makefile("rwb")

    def close(self):
        # Closing flushes a buffered request; on a connection the daemon already closed that
        # raises again (BrokenPipeError): the connection is gone either way.
        for part in (self._file, self._sock):
            if part is not None:
                try:
                    part.close()
                except OSError:
                    pass
        self._sock = self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, op):
        """Sends one operation (`"ping"` or `{"spf": {"domain": ...}}`) and returns the reply."""
        try:
            return self._call(op)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self._connect()
            return self._call(op)

    def _call(self, op):
        req_id = next(self._ids)
        self._file.write(json.dumps({"id": req_id, "op": op}).encode() + b"\n")
        self._file.flush()
        while True:
            line = self._file.readline()
            if not line:
                raise EOFError("the daemon closed the connection")
            resp = json.loads(line)
            if resp.get("id") not in (req_id, 0):
                continue
            result = resp["result"]
            if "error" in result:
                raise MailpolicyError(result["error"]["code"], result["error"]["message"])
            return result["ok"]

    def ping(self):
        return self.call("ping")

    def hello(self, version=PROTOCOL_VERSION):
        return self.call({"hello": {"version": version}})["hello"]

    def dmarc(self, domain):
        return self.call({"dmarc": {"domain": domain}})["dmarc"]

    def spf(self, domain):
        return self.call({"spf": {"domain": domain}})["policy"]

    def dkim_key(self, selector, domain):
        return self.call({"dkim_key": {"selector": selector, "domain": domain}})["policy"]

    def atps(self, signer, author, hash="sha256"):
        return self.call({"atps": {"signer": signer, "author": author, "hash": hash}})["policy"]

    def tlsa(self, host, port=25):
        return self.call({"tlsa": {"host": host, "port": port}})["policy"]

    def spf_check(self, ip, mail_from, helo):
        """SPF check_host(): {"result": "pass", "mechanism": ..., "received_spf": ...}."""
        return self.call({"spf_check": {"ip": ip, "mail_from": mail_from, "helo": helo}})["spf_check"]

    def dmarc_evaluate(self, from_domain, spf=None, dkim=(), forwarders=(), seed=None):
        """The DMARC verdict. spf: {"domain", "result"}; dkim: [{"domain", "selector", "result"}]."""
        op = {"from_domain": from_domain, "spf": spf, "dkim": list(dkim),
              "forwarders": list(forwarders), "seed": seed}
        return self.call({"dmarc_evaluate": op})["dmarc_verdict"]

    def stats(self):
        return self.call("stats")["stats"]


def record(policy_answer):
    """The parsed record of a policy answer (`spf`, `dkim_key`, `atps`), or None."""
    data = policy_answer["answer"]["data"]
    if not isinstance(data, dict):
        return None
    (kind, found), = data.items()
    if isinstance(found, dict) and "valid" in found:
        return found["valid"]["policy"]
    return None


def raw(answer):
    """The text of the selected record, as published (its strings joined), or None.

    `answer` is a policy answer (`spf`, `dkim_key`, `atps`) or the answer of `dmarc` (whose
    `record` is a policy answer, or None when no policy applies). None when the name has no
    record of the kind (or two where one is allowed). The record is given whether it parsed or
    not: a DKIM library can verify with it unchanged.
    """
    if answer is None:
        return None
    if "answer" not in answer:  # a dmarc answer
        answer = answer.get("record")
        if answer is None:
            return None
    return answer["answer"].get("raw")

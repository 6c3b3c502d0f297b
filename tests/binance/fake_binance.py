#!/usr/bin/python3
"""A Binance REST API on loopback for health-checks/binance-key-check's tests.

    fake_binance.py KEYS.json [PORT [TLS.pem]]

Serves GET /sapi/v1/account/apiRestrictions and /api/v3/account the way
Binance's signed USER_DATA endpoints answer, in Binance's order of checks:
  -2014  the X-MBX-APIKEY header is missing or not 64 letters and digits
  -2015  the key is unknown, or the key has an IP allow-list without 127.0.0.1
         ("..., request ip: 127.0.0.1", HTTP 401)
  -1022  the HMAC-SHA256 of the query (up to &signature=) with the key's
         secret is not the signature
  -1021  timestamp outside recvWindow
and otherwise the key's restrictions (or an account). KEYS.json maps each
key to {"secret": ..., "ip_allowed": bool, "restrictions": {...}}. With
TLS.pem (a certificate chain, then its key), it serves HTTPS, as
https://api.binance.com does. Prints "listening PORT" once it serves; logs
nothing else.
"""

import hashlib
import hmac
import http.server
import json
import re
import ssl
import sys
import time
import urllib.parse

KEYS = {}


def error(code, msg, status):
    return status, {"code": code, "msg": msg}


def verdict(path, key, query):
    if not key or not re.fullmatch(r"[A-Za-z0-9]{64}", key):
        return error(-2014, "API-key format invalid.", 401)
    entry = KEYS.get(key)
    if entry is None:
        return error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    if not entry.get("ip_allowed", True):
        return error(-2015, "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1", 401)
    payload, _, signature = query.rpartition("&signature=")
    want = hmac.new(entry["secret"].encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(want, signature.lower()):
        return error(-1022, "Signature for this request is not valid.", 400)
    params = dict(urllib.parse.parse_qsl(payload))
    now = int(time.time() * 1000)
    window = int(params.get("recvWindow", 5000))
    if abs(now - int(params.get("timestamp", 0))) > window:
        return error(-1021, "Timestamp for this request is outside of the recvWindow.", 400)
    restrictions = dict(entry.get("restrictions", {}))
    if path == "/sapi/v1/account/apiRestrictions":
        restrictions.setdefault("ipRestrict", entry.get("ip_restrict", False))
        return 200, restrictions
    return 200, {
        "canTrade": restrictions.get("enableSpotAndMarginTrading", False),
        "canWithdraw": restrictions.get("enableWithdrawals", False),
        "canDeposit": True,
        "accountType": "SPOT",
        "balances": [],
        "permissions": ["SPOT"],
    }


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path not in ("/sapi/v1/account/apiRestrictions", "/api/v3/account"):
            status, body = 404, {"code": -1, "msg": "no such endpoint"}
        else:
            status, body = verdict(path, self.headers.get("X-MBX-APIKEY"), query)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    with open(sys.argv[1]) as f:
        KEYS.update(json.load(f))
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[3])
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The demo's upstream: answers every request with 200 and a JSON echo of its method,
path and the request headers it received, so the headers Envoy set from mesh-authz's
answer (x-forwarded-user, ...) and the ones it removed (authorization) are visible.

    python3 echo_upstream.py [PORT] [PORT_FILE]

PORT 0 (the default) picks a free port; the bound port is written to PORT_FILE if given.
Only listens on 127.0.0.1.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            if name in headers:
                previous = headers[name]
                headers[name] = (previous if isinstance(previous, list) else [previous]) + [value]
            else:
                headers[name] = value
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers}, indent=2
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: %s %s\n" % (self.address_string(), fmt % args))


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    if len(sys.argv) > 2:
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        # Renamed into place so a reader never sees a half-written port.
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

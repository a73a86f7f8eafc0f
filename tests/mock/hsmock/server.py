"""
server.py - the mock's HTTP(S) server and command line.
"""

import argparse
import os
import ssl
import sys
from http.server import ThreadingHTTPServer

from .handler import Handler
from .routes import Api
from .state import State


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError,
                            OSError)):
            if self.verbose:
                sys.stderr.write("mock: connection error: %r\n" % (exc,))
            return
        sys.stderr.write("mock: internal error: %r\n" % (exc,))
        import traceback
        traceback.print_exc(file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description="HubSpot API mock")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--token", action="append")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    st = State(args.token or ["test-token"], args.seed)
    try:
        srv = Server(("127.0.0.1", args.port), Handler)
    except OSError as e:
        sys.stderr.write("mock: cannot listen on port %d: %s\n"
                         % (args.port, e))
        return 1
    srv.state = st
    srv.api = Api(st)
    srv.verbose = args.verbose
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                     do_handshake_on_connect=False)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp.%d" % os.getpid()
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    sys.stdout.write("listening on %d\n" % port)
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0

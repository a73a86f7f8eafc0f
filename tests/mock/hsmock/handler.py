"""
handler.py - the HTTP side of the mock.

Each API call goes through, in order: down -> slow_ms -> auth (401) ->
rate limit (429) -> force_status -> fail_ids -> error_share (not applied)
-> missing_scopes (403) -> the call is executed (routes.Api) -> reset/
truncated/malformed/huge_body garble the answer of a call that WAS applied
(the dangerous case for idempotency).  Every call is logged for
/_mock/requests.  Paths under /_mock/ go to the control API (control.py).
"""

import json
import math
import socket
import struct
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote

from .control import ControlApi
from .errors import ApiError, bad_json
from .model import jdump, next_midnight_portal, undated
from .routes.account import schema_scope, type_scope
from .state import LOCK


EDGE_HTML = ("<html><head><title>%d %s</title></head><body><center><h1>%d "
             "%s</h1></center><hr><center>cloudflare</center></body></html>")
REASONS = {500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class Handler(ControlApi, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubspot-mock/1.0"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("mock: " + (fmt % args) + "\n")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # -- I/O -----------------------------------------------------------------

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n",
                                                             b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def emit(self, status, body, headers, ctype="application/json;"
             "charset=utf-8", mode=None):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status == 204 or status == 304:
            body = b""
        else:
            self.send_header("Content-Type", ctype)
            cl = len(body) + (4096 if mode == "truncated" else 0)
            self.send_header("Content-Length", str(cl))
        self._headers_buffer.append(b"\r\n")
        if mode == "reset":
            self._headers_buffer.append(body[:max(1, len(body) // 2)])
            self.flush_headers()
            self.abort(reset=True)
            return
        self._headers_buffer.append(body)
        self.flush_headers()
        if mode == "truncated":
            self.abort(reset=False)

    def abort(self, reset):
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET,
                                           socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    # -- dispatch ------------------------------------------------------------

    def dispatch(self, method):
        t_start = time.perf_counter()
        raw = self.read_body()
        path, _, query = self.path.partition("?")
        q = parse_qs(query)
        cid = str(uuid.uuid4())
        if path.startswith("/_mock/") or path == "/_mock":
            return self.control(method, path, q, raw, cid)
        st = self.server.state
        api = self.server.api
        faults = st.faults
        hdrs = [("X-HubSpot-Correlation-Id", cid)]
        # a date-versioned path answers as its /crm/v3 (v4) twin; the log
        # keeps the path as it was called
        parts = undated([unquote(x) for x in path.strip("/").split("/") if x])
        down = faults.get("down")
        if down:
            status = 0 if down == "refuse" else int(down)
            with LOCK:
                self.log(st, method, path, status, raw, None, t_start,
                         "down:" + down)
            if down == "refuse":
                self.abort(reset=False)
                return
            body = (EDGE_HTML % (status, REASONS[status], status,
                                 REASONS[status])).encode()
            return self.emit(status, body, hdrs, "text/html")
        slow = faults.get("slow_ms")
        if slow:
            time.sleep(float(slow) / 1000.0)
        body_obj = None
        parse_err = None
        if raw:
            try:
                body_obj = json.loads(raw)
            except ValueError as e:
                parse_err = bad_json(str(e))
        mode = None
        fault = None
        with LOCK:
            try:
                is_token_info = parts == ["oauth", "v2", "private-apps",
                                          "get", "access-token-info"]
                self.check_auth(st, is_token_info)
                is_search = len(parts) == 5 and parts[4] == "search" and \
                    method == "POST"
                rl = self.rate(st, is_search, hdrs)
                if rl:
                    raise rl
                fs = self.forced(st, method, path)
                if fs:
                    fault = "force_status"
                    raise fs
                fe = self.failing_input(st, body_obj)
                if fe:
                    fault = "fail_ids"
                    raise fe
                share = faults.get("error_share")
                if share and st.rng.random() < float(share):
                    codes = [500, 502, 503, 504]
                    code = codes[st.error_rot % 4]
                    st.error_rot += 1
                    fault = "error_share"
                    raise ApiError(code, "INTERNAL_ERROR" if code == 500
                                   else "SERVICE_UNAVAILABLE",
                                   "%s (mock error_share)" % REASONS[code])
                types, write, schema = api.scopes_needed(method, parts)
                missing = faults.get("missing_scopes")
                if missing:
                    for t in types:
                        if t in missing:
                            need = (schema_scope if schema else type_scope)(
                                t, write)
                            raise ApiError(
                                403, "MISSING_SCOPES",
                                "This app hasn't been granted all required "
                                "scopes to make this call. Read more about "
                                "required scopes here: "
                                "https://developers.hubspot.com/scopes.",
                                errors=[{"message": "One or more of the "
                                         "following scopes are required.",
                                         "context": {"requiredGranularScopes":
                                                     [need]}}],
                                extra={"links": {"scopes": "https://"
                                       "developers.hubspot.com/scopes"}})
                if parse_err:
                    raise parse_err
                if is_token_info and method == "POST":
                    status, out = api.token_info(body_obj or {}, cid)
                else:
                    status, out = api.route(method, parts, q, body_obj)
            except ApiError as e:
                status, out = e.status, e.body(cid)
                hdrs.extend(e.headers)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                sys.stderr.write("mock: %s %s: %r\n" % (method, path, e))
                status, out = 400, ApiError(
                    400, "VALIDATION_ERROR",
                    "Invalid input JSON on line 1, column 1: %s" % e).body(
                        cid)
            payload = jdump(out) if out is not None else b""
            if fault is None and status < 500 and status != 429 and \
                    status not in (401, 403):
                mode, payload, status, fault = self.output_faults(
                    st, faults, payload, status, out)
            self.log(st, method, path, status, raw, body_obj, t_start,
                     fault, out)
        ctype = "application/json;charset=utf-8"
        if status in (502, 504) and fault == "error_share":
            payload = (EDGE_HTML % (status, REASONS[status], status,
                                    REASONS[status])).encode()
            ctype = "text/html"
        self.emit(status, payload, hdrs, ctype, mode)

    def output_faults(self, st, faults, payload, status, out):
        rng = st.rng
        for key, mode in (("reset_share", "reset"),
                          ("truncated_share", "truncated"),
                          ("malformed_share", "malformed")):
            share = faults.get(key)
            if share and rng.random() < float(share):
                if mode == "malformed":
                    return None, (b'{"status":"COMPLETE","results":[{"id":'
                                  b'"1001","properties":<html>'), 200, key
                if status == 204:
                    payload, status = b'{"status":"COMPLETE"}', 200
                return mode, payload, status, key
        huge = faults.get("huge_body")
        if huge:
            size = 12 * 1024 * 1024 if huge is True else int(huge)
            wrapped = out if isinstance(out, dict) else {"result": out}
            wrapped = dict(wrapped)
            wrapped["padding"] = "x" * size
            return None, jdump(wrapped), 200 if status == 204 else status, \
                "huge_body"
        return None, payload, status, None

    def check_auth(self, st, is_token_info):
        af = st.faults.get("auth_fail")
        if af:
            if af == "expired":
                raise ApiError(401, "EXPIRED_AUTHENTICATION",
                               "The OAuth token used to make this call "
                               "expired 1 hour(s) ago.")
            raise ApiError(401, "INVALID_AUTHENTICATION",
                           "Authentication credentials not found. This API "
                           "supports OAuth 2.0 authentication and you can "
                           "find more details at https://developers.hubspot"
                           ".com/docs/methods/auth/oauth-overview")
        if is_token_info:
            return
        auth = self.headers.get("Authorization") or ""
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if tok is None or tok not in st.cfg.tokens:
            raise ApiError(401, "INVALID_AUTHENTICATION",
                           "Authentication credentials not found. This API "
                           "supports OAuth 2.0 authentication and you can "
                           "find more details at https://developers.hubspot"
                           ".com/docs/methods/auth/oauth-overview")

    def rate(self, st, is_search, hdrs):
        cfg = st.cfg
        now = time.monotonic()
        win_s = cfg.window_ms / 1000.0
        while st.win and st.win[0] <= now - win_s:
            st.win.popleft()
        while st.sec and st.sec[0] <= now - 1.0:
            st.sec.popleft()
        while st.search_sec and st.search_sec[0] <= now - 1.0:
            st.search_sec.popleft()
        policy = None
        if cfg.daily_limit and st.daily_used >= cfg.daily_limit:
            policy = "DAILY"
        elif is_search and cfg.search_per_second and \
                len(st.search_sec) >= cfg.search_per_second:
            policy = "SECONDLY"
        elif cfg.max_per_window and (not is_search or
                                     cfg.search_counts_in_window) and \
                len(st.win) >= cfg.max_per_window:
            policy = "TEN_SECONDLY_ROLLING"
        if policy is None:
            st.daily_used += 1
            if not is_search or cfg.search_counts_in_window:
                st.win.append(now)
                st.sec.append(now)
                st.max_window_seen = max(st.max_window_seen, len(st.win))
            if is_search:
                st.search_sec.append(now)
        if cfg.daily_limit:
            hdrs.append(("X-HubSpot-RateLimit-Daily", str(cfg.daily_limit)))
            hdrs.append(("X-HubSpot-RateLimit-Daily-Remaining",
                         str(max(0, cfg.daily_limit - st.daily_used))))
        if cfg.max_per_window:
            secondly = max(1, cfg.max_per_window // 10)
            hdrs.extend([
                ("X-HubSpot-RateLimit-Interval-Milliseconds",
                 str(cfg.window_ms)),
                ("X-HubSpot-RateLimit-Max", str(cfg.max_per_window)),
                ("X-HubSpot-RateLimit-Remaining",
                 str(max(0, cfg.max_per_window - len(st.win)))),
                ("X-HubSpot-RateLimit-Secondly", str(secondly)),
                ("X-HubSpot-RateLimit-Secondly-Remaining",
                 str(max(0, secondly - len(st.sec))))])
        if policy is None:
            return None
        return self.rate_error(st, policy, now)

    def rate_error(self, st, policy, now=None):
        cfg = st.cfg
        word = {"DAILY": "daily", "SECONDLY": "secondly",
                "TEN_SECONDLY_ROLLING": "ten_secondly_rolling"}[policy]
        # HubSpot's 429 body as integrators quote it: errorType and
        # policyName, no category (developers.hubspot.com documents none)
        e = ApiError(429, None,
                     "You have reached your %s limit." % word,
                     extra={"errorType": "RATE_LIMIT", "policyName": policy})
        ra = cfg.retry_after
        if ra:
            if ra is True:
                if policy == "DAILY":
                    secs = next_midnight_portal().timestamp() - time.time()
                elif policy == "SECONDLY":
                    secs = 1
                else:
                    secs = (st.win[0] + cfg.window_ms / 1000.0 -
                            (now or time.monotonic())) if st.win else 1
                secs = max(1, int(math.ceil(secs)))
            else:
                secs = int(ra)
            e.headers.append(("Retry-After", str(secs)))
        return e

    def failing_input(self, st, body):
        """fail_ids: a batch call with one of these inputs fails whole."""
        fi = st.faults.get("fail_ids")
        if not fi or not isinstance(body, dict) or \
                not isinstance(body.get("inputs"), list):
            return None
        for inp in body["inputs"]:
            if not isinstance(inp, dict):
                continue
            to = inp.get("to")
            ids = [str(inp.get("id"))]
            if isinstance(to, dict):
                ids.append(str(to.get("id")))      # v4 association pairs
            if any(x in fi["ids"] for x in ids):
                s = fi["status"]
                if s < 500:
                    return ApiError(s, "VALIDATION_ERROR",
                                    "invalid input (mock fail_ids)")
                return ApiError(s, "INTERNAL_ERROR" if s == 500
                                else "SERVICE_UNAVAILABLE",
                                "internal error (mock fail_ids)")
        return None

    def forced(self, st, method, path):
        rules = st.faults.get("force_status")
        if not rules:
            return None
        for r in rules:
            if r["count"] <= 0:
                continue
            if r["path_contains"] and r["path_contains"] not in path:
                continue
            if r.get("method") and r["method"].upper() != method:
                continue
            r["count"] -= 1
            s = r["status"]
            if s == 429:
                e = self.rate_error(st, r.get("policy",
                                              "TEN_SECONDLY_ROLLING"))
                if "retry_after" in r:
                    e.headers = [("Retry-After", str(r["retry_after"]))]
                return e
            cat = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION",
                   403: "MISSING_SCOPES", 404: "OBJECT_NOT_FOUND",
                   409: "CONFLICT", 500: "INTERNAL_ERROR"}.get(
                       s, "SERVICE_UNAVAILABLE" if s >= 500 else "ERROR")
            return ApiError(s, cat, r.get("message",
                                          "Forced status %d (mock)" % s))
        return None

    def log(self, st, method, path, status, raw, body_obj, t_start, fault,
            answer=None):
        st.seq += 1
        st.calls += 1
        st.by_status[status] += 1
        if status == 429:
            st.rate_limited += 1
        n_inputs = None
        if isinstance(body_obj, dict) and isinstance(body_obj.get("inputs"),
                                                     list):
            n_inputs = len(body_obj["inputs"])
            st.inputs_total += n_inputs
        e = {"seq": st.seq, "time": time.time(), "method": method,
             "path": path, "status": status, "inputs": n_inputs,
             "bodyBytes": len(raw),
             "durationMs": round((time.perf_counter() - t_start) * 1000, 3)}
        if fault:
            e["fault"] = fault
        if st.cfg.log_bodies:
            e["body"] = body_obj if body_obj is not None else \
                raw.decode("utf-8", "replace")
            # the answer as sent, unless a fault garbled it (tests/contract)
            if answer is not None and not fault:
                e["answer"] = answer
        st.log.append(e)
        while len(st.log) > st.cfg.log_limit:
            st.log.popleft()

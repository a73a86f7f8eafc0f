#!/usr/bin/python3
"""
hubspot_mock.py - a local mock of the HubSpot CRM REST API for erpcrm tests.

It answers the endpoints erpcrm uses the way HubSpot documents them
(../../shared/HUBSPOT.md): CRM v3 objects (batch upsert/create/update/
archive/read, single-object calls, search), v4 associations, properties,
property groups, deal pipelines, owners, account info, token info.  It
enforces HubSpot's rate limits and sends its rate-limit headers, and it can
inject faults (outage, slowness, 5xx, malformed/truncated/reset answers, auth
failures, missing scopes, forced statuses, per-input rejections).

Tests drive and inspect it through a control API under /_mock/ (no auth, not
rate limited, not logged as API calls).

    python3 hubspot_mock.py --port 0 --port-file FILE
        [--tls-cert CERT --tls-key KEY] [--token T ...] [--seed N] [--verbose]

Standard library only.  One global lock serialises all state changes.

Control API (JSON in and out; no auth; never rate limited or logged)
  GET  /_mock/health              200 "ok" (text/plain)
  POST /_mock/reset               clear objects, associations, properties,
                                  pipelines, log, counters, faults, config;
                                  an optional body is applied as config
  POST /_mock/config              merge config; GET /_mock/config shows it
       tokens [..], max_per_window (0 = unlimited), window_ms, daily_limit
       (0 = unlimited), daily_used, search_per_second, retry_after (bool, or
       a fixed number of seconds), search_counts_in_window (bool),
       shuffle_results (bool, default true), log_bodies (bool), log_limit,
       unique_properties {"companies": ["erp_id"]},
       properties {"companies": [{"name": "nip", "type": "string",
                   "hasUniqueValue": false, "options": [...]}]},
       custom_object_types ["2-1234" | {"id": "2-1234", "name": "invoices"}],
       owners [{"id", "email", "firstName", "lastName", "userId"}],
       upsert_whole_batch (bool, default false: one bad input of a batch
                   upsert fails the whole batch with its 4xx, nothing is
                   written, instead of a 207),
       search_index_delay_ms (objects created less than this long ago are
                   not found by search yet; default 0),
       search_max_total (results beyond it cannot be paged to: 400;
                   default 10000, HubSpot's cap),
       unique_reuse_after_archive (bool, default true: an archived object
                   releases its unique values; false: it keeps them, and
                   writing one again answers 409),
       required_properties {"companies": ["industry"]} (creating an object
                   without them is refused with 400, as portal validation
                   rules do),
       deal_pipeline_limit (deal pipelines the portal may have, served by
                   GET /crm/v3/limits/pipelines and enforced on creation;
                   default 100, HubSpot Free: 1),
       granular_scopes (bool: the token has crm.objects.products.* and
                   crm.objects.line_items.* instead of the legacy e-commerce)
  POST /_mock/faults              replace all faults ({} clears); GET shows
       down "refuse"|"503"|"504", slow_ms, error_share, malformed_share,
       truncated_share, reset_share (0..1), huge_body (true = 12 MB, or a
       byte count), auth_fail (true | "expired"), missing_scopes [types],
       force_status {"count", "status", "path_contains", "method",
       "policy" (for 429), "retry_after", "message"} or a list of them,
       reject_ids [id values] (upsert ids, and association targets),
       fail_ids {"ids": [id values], "status": 500} (a batch call with
       one of these input ids, or association target ids, is answered
       with that status as a whole: HubSpot failing on one input)
  GET  /_mock/objects/{type}      {"results": [{id, properties, archived,
                                  createdAt, updatedAt}]}
  POST /_mock/objects/{type}      {"properties": {...}} creates an object
                                  directly (no validation), as if made in the
                                  HubSpot UI
  DELETE /_mock/objects/{type}/{id}  archive it, as if deleted in HubSpot
  GET  /_mock/associations        {"results": [{fromType, fromId, toType,
                                  toId, typeId, category}]}
  GET  /_mock/requests?since=N    {"results": [{seq, time, method, path,
                                  status, inputs, bodyBytes, durationMs,
                                  fault?, body?, answer? (log_bodies)}],
                                  "lastSeq"}
                                  status 0 = connection dropped (refuse)
  GET  /_mock/stats               {calls, byStatus, rateLimited,
                                  maxWindowCalls, windowMs, dailyUsed,
                                  inputs, cpuSeconds, uptimeSeconds,
                                  objects {type: {active, archived}},
                                  associations}

Fault order per API call: down -> slow_ms -> auth (401) -> rate limit (429)
-> force_status -> error_share (not applied) -> missing_scopes (403) ->
the call is executed -> reset/truncated/malformed/huge_body garble the
answer of a call that WAS applied (the dangerous case for idempotency).
"""

import argparse
import collections
import datetime
import json
import math
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

try:
    from zoneinfo import ZoneInfo
    PORTAL_TZ = ZoneInfo("Europe/Warsaw")
except Exception:  # pragma: no cover - tzdata missing
    PORTAL_TZ = datetime.timezone(datetime.timedelta(hours=1))

LOCK = threading.Lock()
BATCH_LIMIT = 100
SEARCH_LIMIT_MAX = 200
FIRST_OBJECT_ID = 1000
PORTAL_ID = 12345678

# ---------------------------------------------------------------------------
# Static description of the standard objects
# ---------------------------------------------------------------------------

STANDARD_TYPES = ["contacts", "companies", "deals", "products", "line_items"]
TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3",
            "products": "0-7", "line_items": "0-8"}
TYPE_ALIASES = {}
for _t, _id in TYPE_IDS.items():
    TYPE_ALIASES[_t] = _t
    TYPE_ALIASES[_id] = _t
    TYPE_ALIASES[_t[:-1]] = _t          # contact, company.., deal, product
TYPE_ALIASES["company"] = "companies"
TYPE_ALIASES["line_item"] = "line_items"
TYPE_ALIASES["lineitem"] = "line_items"
TYPE_ALIASES["lineitems"] = "line_items"
SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal",
            "products": "product", "line_items": "line item"}
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation",
          "deals": "dealinformation", "products": "productinformation",
          "line_items": "lineiteminformation"}

LIFECYCLE = ["subscriber", "lead", "marketingqualifiedlead",
             "salesqualifiedlead", "opportunity", "customer", "evangelist",
             "other"]

# name -> type (options None = any value accepted for an enumeration)
STANDARD_PROPS = {
    "companies": {
        "name": "string", "domain": "string", "website": "string",
        "phone": "string", "address": "string", "city": "string",
        "zip": "string", "state": "string", "country": "string",
        "industry": "enumeration", "description": "string",
        "numberofemployees": "number", "annualrevenue": "number",
        "hubspot_owner_id": "enumeration", "lifecyclestage": "enumeration",
    },
    "contacts": {
        "email": "string", "firstname": "string", "lastname": "string",
        "phone": "string", "mobilephone": "string", "jobtitle": "string",
        "company": "string", "hubspot_owner_id": "enumeration",
        "lifecyclestage": "enumeration",
    },
    "deals": {
        "dealname": "string", "amount": "number", "closedate": "datetime",
        "pipeline": "enumeration", "dealstage": "enumeration",
        "hubspot_owner_id": "enumeration",
        "deal_currency_code": "enumeration", "description": "string",
        "dealtype": "enumeration",
    },
    "products": {
        "name": "string", "price": "number", "hs_sku": "string",
        "description": "string", "hs_cost_of_goods_sold": "number",
        "hs_price_pln": "number", "hs_price_eur": "number",
        "hs_price_usd": "number", "hs_recurring_billing_period": "string",
    },
    "line_items": {
        "name": "string", "quantity": "number", "price": "number",
        "discount": "number", "hs_product_id": "number",
        "hs_line_item_currency_code": "enumeration",
        "hs_position_on_quote": "number", "amount": "number",
        "description": "string", "hs_sku": "string",
    },
}
STANDARD_OPTIONS = {
    "lifecyclestage": LIFECYCLE,
    "dealtype": ["newbusiness", "existingbusiness"],
}
SYSTEM_PROPS = {"hs_object_id": "number", "createdate": "datetime",
                "hs_lastmodifieddate": "datetime"}
READ_ONLY = {"hs_object_id", "hs_lastmodifieddate"}

DEFAULT_READ_PROPS = {
    "companies": ["createdate", "domain", "hs_lastmodifieddate",
                  "hs_object_id", "name"],
    "contacts": ["createdate", "email", "firstname", "hs_object_id",
                 "lastmodifieddate", "lastname"],
    "deals": ["amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"],
    "products": ["createdate", "description", "hs_lastmodifieddate",
                 "hs_object_id", "name", "price"],
    "line_items": ["amount", "createdate", "hs_lastmodifieddate",
                   "hs_object_id", "hs_product_id", "name", "price",
                   "quantity"],
}

FIELD_TYPES = {
    "string": {"text", "textarea", "html", "file", "phonenumber"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox",
                    "calculation_equation"},
    "bool": {"booleancheckbox"},
    "phone_number": {"phonenumber"},
}
DEFAULT_FIELD_TYPE = {"string": "text", "number": "number", "date": "date",
                      "datetime": "date", "enumeration": "select",
                      "bool": "booleancheckbox",
                      "phone_number": "phonenumber"}

DEFAULT_STAGES = [
    ("appointmentscheduled", "Appointment Scheduled", "0.2", "false"),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", "false"),
    ("presentationscheduled", "Presentation Scheduled", "0.6", "false"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", "false"),
    ("contractsent", "Contract Sent", "0.9", "false"),
    ("closedwon", "Closed Won", "1.0", "true"),
    ("closedlost", "Closed Lost", "0.0", "true"),
]

# (from, to, category, typeId, label, inverse typeId)
HUBSPOT_ASSOC_DEFS = [
    ("contacts", "companies", 279, None, 280),
    ("companies", "contacts", 280, None, 279),
    ("contacts", "companies", 1, "Primary", 2),
    ("companies", "contacts", 2, "Primary", 1),
    ("deals", "companies", 341, None, 342),
    ("companies", "deals", 342, None, 341),
    ("deals", "companies", 5, "Primary", 6),
    ("companies", "deals", 6, "Primary", 5),
    ("deals", "contacts", 3, None, 4),
    ("contacts", "deals", 4, None, 3),
    ("deals", "line_items", 19, None, 20),
    ("line_items", "deals", 20, None, 19),
    ("deals", "deals", 451, None, 451),
    ("companies", "companies", 13, "Parent Company", 14),
    ("companies", "companies", 14, "Child Company", 13),
]

DEFAULT_OWNERS = [
    ("75000001", "anna.nowak@example.com", "Anna", "Nowak", 9000001),
    ("75000002", "jan.kowalski@example.com", "Jan", "Kowalski", 9000002),
    ("75000003", "ewa.wisniewska@example.com", "Ewa", "Wisniewska", 9000003),
]

ALL_SCOPES_BASE = ["oauth", "crm.objects.owners.read",
                   "crm.schemas.deals.read", "crm.schemas.deals.write"]

NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?$")
EPOCH_RE = re.compile(r"^-?\d{1,15}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PROPNAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DATEVER_RE = re.compile(r"^\d{4}-\d{2}$")


def now_iso(t=None):
    if t is None:
        t = time.time()
    ms = int((t - int(t)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % ms


def next_midnight_portal(t=None):
    now = datetime.datetime.fromtimestamp(t or time.time(), PORTAL_TZ)
    tomorrow = (now + datetime.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    return tomorrow


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class ApiError(Exception):
    """A whole-request error: answered with HubSpot's error body."""

    def __init__(self, status, category, message, errors=None, context=None,
                 sub=None, extra=None):
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.sub = sub
        self.extra = extra or {}
        self.headers = []

    def body(self, cid):
        b = {"status": "error", "message": self.message,
             "correlationId": cid}
        if self.category is not None:
            b["category"] = self.category
        if self.sub:
            b["subCategory"] = self.sub
        if self.context is not None:
            b["context"] = self.context
        if self.errors is not None:
            b["errors"] = self.errors
        b.update(self.extra)
        return b


class InputError(Exception):
    """A failure of one input of a batch."""

    def __init__(self, status, category, message, context, errors=None,
                 sub=None):
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.context = context
        self.errors = errors or []
        self.sub = sub

    def entry(self):
        # every field HubSpot's StandardError schema requires
        e = {"status": "error", "category": self.category,
             "message": self.message, "context": self.context,
             "errors": self.errors, "links": {}}
        if self.sub:
            e["subCategory"] = self.sub
        return e


def bad_json(msg):
    return ApiError(400, "VALIDATION_ERROR",
                    "Invalid input JSON on line 1, column 1: " + msg)


def unrecognized(field, cls):
    return bad_json('Unrecognized field "%s" (class %s), not marked as '
                    'ignorable' % (field, cls))


def check_keys(d, allowed, cls):
    if not isinstance(d, dict):
        raise bad_json("Cannot deserialize value of type `%s` from %s"
                       % (cls, type(d).__name__))
    for k in d:
        if k not in allowed:
            raise unrecognized(k, cls)


def batch_failed(errs):
    """All inputs failed: the first failure's status and body."""
    e0 = errs[0]
    sub = []
    for e in errs:
        d = {"message": e.message, "code": e.category, "context": e.context}
        if e.sub:
            d["subCategory"] = e.sub
        sub.append(d)
    return ApiError(e0.status, e0.category, e0.message, errors=sub,
                    context=e0.context, sub=e0.sub)


def prop_errors_input(ctx, perrs):
    """InputError for a list of property validation failures."""
    msg = "Property values were not valid: " + json.dumps(
        perrs, separators=(",", ":"))
    sub = [{"message": p["message"], "code": p["error"],
            "context": {"propertyName": [p["name"]]}} for p in perrs]
    return InputError(400, "VALIDATION_ERROR", msg, ctx, sub)


def perr(name, code, message):
    return {"isValid": False, "message": message, "error": code,
            "name": name, "localizedErrorMessage": message}


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

class Config:
    FIELDS = {"tokens", "max_per_window", "window_ms", "daily_limit",
              "daily_used", "search_per_second", "retry_after",
              "unique_properties", "properties", "custom_object_types",
              "log_bodies", "owners", "shuffle_results",
              "search_counts_in_window", "log_limit",
              "upsert_whole_batch", "search_index_delay_ms",
              "search_max_total", "unique_reuse_after_archive",
              "required_properties", "deal_pipeline_limit",
              "granular_scopes"}

    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.max_per_window = 100
        self.window_ms = 10000
        self.daily_limit = 250000
        self.search_per_second = 5
        self.retry_after = False
        self.log_bodies = False
        self.shuffle_results = True
        self.search_counts_in_window = False
        self.log_limit = 500000
        self.upsert_whole_batch = False
        self.search_index_delay_ms = 0
        self.search_max_total = 10000
        self.unique_reuse_after_archive = True
        self.required_properties = {}
        self.deal_pipeline_limit = 100
        self.granular_scopes = False

    def public(self):
        return {"tokens": self.tokens, "max_per_window": self.max_per_window,
                "window_ms": self.window_ms, "daily_limit": self.daily_limit,
                "search_per_second": self.search_per_second,
                "retry_after": self.retry_after,
                "log_bodies": self.log_bodies,
                "shuffle_results": self.shuffle_results,
                "search_counts_in_window": self.search_counts_in_window,
                "log_limit": self.log_limit,
                "upsert_whole_batch": self.upsert_whole_batch,
                "search_index_delay_ms": self.search_index_delay_ms,
                "search_max_total": self.search_max_total,
                "unique_reuse_after_archive": self.unique_reuse_after_archive,
                "required_properties": self.required_properties,
                "deal_pipeline_limit": self.deal_pipeline_limit,
                "granular_scopes": self.granular_scopes}


FAULT_KEYS = {"down", "slow_ms", "error_share", "malformed_share",
              "truncated_share", "reset_share", "huge_body", "auth_fail",
              "missing_scopes", "force_status", "reject_ids", "fail_ids"}

# Longest property value HubSpot takes: 65,536 characters for text
# properties set through the CRM and its API (HubSpot's knowledge base on
# property field types).  HubSpot's services are Java: the length is taken
# in UTF-16 code units.  The exact error text is not documented; this one
# follows the shape of HubSpot's other property validation errors.
MAX_VALUE_CHARS = 65536


class State:
    def __init__(self, tokens, seed):
        self.base_tokens = list(tokens)
        self.seed = seed
        self.reset()

    # -- setup -------------------------------------------------------------

    def reset(self):
        self.cfg = Config(self.base_tokens)
        self.rng = random.Random(self.seed)
        self.faults = {}
        self.error_rot = 0
        self.next_id = FIRST_OBJECT_ID
        self.next_pipe_id = 100
        self.next_stage_id = 1000000
        self.next_assoc_type = 100
        self.types = list(STANDARD_TYPES)
        self.aliases = dict(TYPE_ALIASES)
        self.props = {}
        self.groups = {}
        self.objects = {}
        self.created_at = {}     # (type, id) -> time.time() of creation
        self.uniq = {}
        for t in STANDARD_TYPES:
            self._init_type(t)
        self.assoc = {}          # (ft, fid, tt) -> {tid: set((cat, typeId))}
        self.defs = {}           # (ft, tt) -> {(cat, typeId): label}
        self.inverse = {}        # (ft, tt, cat, typeId) -> typeId (tt->ft)
        self.def_target = {}     # (ft, cat, typeId) -> tt
        self.label_names = {}    # (ft, tt) -> set of names
        for ft, tt, tid, label, inv in HUBSPOT_ASSOC_DEFS:
            self._add_def(ft, tt, "HUBSPOT_DEFINED", tid, label, inv)
        t0 = now_iso()
        self.pipelines = {"default": self._pipeline(
            "default", "Sales Pipeline", 0,
            [{"id": sid, "label": lab, "displayOrder": i,
              "metadata": {"isClosed": closed, "probability": prob}}
             for i, (sid, lab, prob, closed) in enumerate(DEFAULT_STAGES)],
            t0)}
        self.owners = [
            {"id": oid, "email": em, "type": "PERSON", "firstName": fn,
             "lastName": ln, "userId": uid, "userIdIncludingInactive": uid,
             "createdAt": t0, "updatedAt": t0, "archived": False,
             "teams": []}
            for oid, em, fn, ln, uid in DEFAULT_OWNERS]
        # rate limiting
        self.win = collections.deque()
        self.sec = collections.deque()
        self.search_sec = collections.deque()
        self.daily_used = 0
        self.max_window_seen = 0
        # log and stats
        self.log = collections.deque()
        self.seq = 0
        self.by_status = collections.Counter()
        self.calls = 0
        self.rate_limited = 0
        self.inputs_total = 0
        self.started = time.time()

    def _init_type(self, t):
        grp = GROUPS.get(t, t.replace("-", "_") + "information")
        t0 = now_iso()
        self.groups[t] = {grp: {"name": grp, "label": "Information",
                                "displayOrder": 0, "archived": False}}
        self.props[t] = {}
        self.objects[t] = {}
        self.uniq[t] = {}
        for name, typ in SYSTEM_PROPS.items():
            self._put_prop(t, name, typ, grp, t0, hubspot=True)
        for name, typ in STANDARD_PROPS.get(t, {}).items():
            opts = STANDARD_OPTIONS.get(name)
            self._put_prop(t, name, typ, grp, t0, hubspot=True,
                           options=[{"label": o, "value": o,
                                     "displayOrder": i, "hidden": False}
                                    for i, o in enumerate(opts)]
                           if opts else [])
        if t == "contacts":
            self.uniq[t]["email"] = {}

    def _put_prop(self, t, name, typ, group, ts, hubspot=False, label=None,
                  field_type=None, unique=False, options=None,
                  description=""):
        p = {"name": name, "label": label or name.replace("_", " ").title(),
             "type": typ, "fieldType": field_type or DEFAULT_FIELD_TYPE[typ],
             "groupName": group, "description": description,
             "options": options or [], "displayOrder": -1,
             "hasUniqueValue": bool(unique), "hidden": False,
             "formField": True, "calculated": False,
             "externalOptions": False, "hubspotDefined": hubspot,
             "modificationMetadata": {
                 "archivable": not hubspot, "readOnlyDefinition": hubspot,
                 "readOnlyValue": name in READ_ONLY},
             "createdAt": ts, "updatedAt": ts, "archived": False}
        if name in ("phone", "mobilephone"):
            p["fieldType"] = "phonenumber"
        self.props[t][name] = p
        if unique:
            self._build_unique(t, name)
        return p

    def _build_unique(self, t, name):
        idx = {}
        for oid, o in self.objects[t].items():
            if not o["archived"]:
                v = o["properties"].get(name)
                if v not in (None, ""):
                    idx.setdefault(self._norm(t, name, v), oid)
        self.uniq[t][name] = idx

    def _add_def(self, ft, tt, cat, tid, label, inv):
        self.defs.setdefault((ft, tt), {})[(cat, tid)] = label
        self.inverse[(ft, tt, cat, tid)] = inv
        self.def_target[(ft, cat, tid)] = tt

    def _pipeline(self, pid, label, order, stages, ts):
        out = {"id": pid, "label": label, "displayOrder": order,
               "createdAt": ts, "updatedAt": ts, "archived": False,
               "stages": []}
        for s in stages:
            out["stages"].append({
                "id": s["id"], "label": s["label"],
                "displayOrder": s["displayOrder"],
                "metadata": s["metadata"], "createdAt": ts, "updatedAt": ts,
                "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"})
        return out

    def register_custom_type(self, spec):
        if isinstance(spec, dict):
            tid = str(spec.get("id") or spec.get("objectTypeId"))
            names = [spec.get("name"), spec.get("fullyQualifiedName")]
        else:
            tid, names = str(spec), []
        if tid not in self.objects:
            self.types.append(tid)
            self._init_type(tid)
        self.aliases[tid] = tid
        self.aliases[tid.lower()] = tid
        for n in names:
            if n:
                self.aliases[str(n).lower()] = tid

    # -- config --------------------------------------------------------------

    def apply_config(self, c):
        if not isinstance(c, dict):
            raise ApiError(400, "VALIDATION_ERROR", "config must be an object")
        for k in c:
            if k not in Config.FIELDS:
                raise ApiError(400, "VALIDATION_ERROR",
                               "unknown config field %r" % k)
        cfg = self.cfg
        if "tokens" in c:
            cfg.tokens = [str(x) for x in c["tokens"]]
        for k in ("max_per_window", "window_ms", "daily_limit",
                  "search_per_second", "log_limit", "search_index_delay_ms",
                  "search_max_total", "deal_pipeline_limit"):
            if k in c:
                setattr(cfg, k, int(c[k]))
        if "daily_used" in c:
            self.daily_used = int(c["daily_used"])
        for k in ("retry_after",):
            if k in c:
                setattr(cfg, k, c[k])
        for k in ("log_bodies", "shuffle_results", "search_counts_in_window",
                  "upsert_whole_batch", "unique_reuse_after_archive",
                  "granular_scopes"):
            if k in c:
                setattr(cfg, k, bool(c[k]))
        if "owners" in c:
            t0 = now_iso()
            self.owners = []
            for i, o in enumerate(c["owners"]):
                o = dict(o)
                o.setdefault("id", str(75100000 + i))
                o["id"] = str(o["id"])
                o.setdefault("email", "owner%d@example.com" % i)
                o.setdefault("type", "PERSON")
                o.setdefault("firstName", "Owner")
                o.setdefault("lastName", str(i))
                o.setdefault("userId", 9100000 + i)
                o.setdefault("createdAt", t0)
                o.setdefault("updatedAt", t0)
                o.setdefault("archived", False)
                o.setdefault("teams", [])
                self.owners.append(o)
        if "required_properties" in c:
            req = c["required_properties"] or {}
            if not isinstance(req, dict):
                raise ApiError(400, "VALIDATION_ERROR",
                               "required_properties must be an object")
            cfg.required_properties = {
                self.resolve_type(t): [str(n) for n in names]
                for t, names in req.items()}
        for spec in c.get("custom_object_types", []):
            self.register_custom_type(spec)
        t0 = now_iso()
        for t, plist in (c.get("properties") or {}).items():
            t = self.resolve_type(t)
            for p in plist:
                if isinstance(p, str):
                    p = {"name": p}
                typ = p.get("type", "string")
                if typ not in FIELD_TYPES:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "bad property type %r" % typ)
                opts = p.get("options") or []
                opts = [o if isinstance(o, dict) else
                        {"label": str(o), "value": str(o),
                         "displayOrder": i, "hidden": False}
                        for i, o in enumerate(opts)]
                self._put_prop(t, p["name"], typ,
                               p.get("groupName", next(iter(self.groups[t]))),
                               t0, label=p.get("label"),
                               field_type=p.get("fieldType"),
                               unique=p.get("hasUniqueValue", False),
                               options=opts,
                               description=p.get("description", ""))
        for t, names in (c.get("unique_properties") or {}).items():
            t = self.resolve_type(t)
            for n in names:
                if n in self.props[t]:
                    self.props[t][n]["hasUniqueValue"] = True
                    self._build_unique(t, n)
                else:
                    self._put_prop(t, n, "string",
                                   next(iter(self.groups[t])), t0,
                                   unique=True)

    def set_faults(self, f):
        if not isinstance(f, dict):
            raise ApiError(400, "VALIDATION_ERROR", "faults must be an object")
        for k in f:
            if k not in FAULT_KEYS:
                raise ApiError(400, "VALIDATION_ERROR",
                               "unknown fault %r" % k)
        f = json.loads(json.dumps(f))
        if f.get("down") not in (None, False, "refuse", "503", "504", 503,
                                 504):
            raise ApiError(400, "VALIDATION_ERROR", "down must be refuse, "
                           "503 or 504")
        if f.get("down") is not None and f.get("down") is not False:
            f["down"] = str(f["down"])
        else:
            f.pop("down", None)
        fs = f.get("force_status")
        if fs is not None:
            rules = fs if isinstance(fs, list) else [fs]
            for r in rules:
                r.setdefault("count", 1)
                r["status"] = int(r.get("status", 500))
                r.setdefault("path_contains", "")
            f["force_status"] = rules
        if "reject_ids" in f:
            f["reject_ids"] = set(str(x) for x in f["reject_ids"])
        if "fail_ids" in f:
            fi = f["fail_ids"]
            if not isinstance(fi, dict):
                raise ApiError(400, "VALIDATION_ERROR",
                               "fail_ids must be an object")
            f["fail_ids"] = {"ids": sorted(str(x) for x in fi.get("ids", [])),
                             "status": int(fi.get("status", 500))}
        if "missing_scopes" in f:
            f["missing_scopes"] = set(
                self.aliases.get(str(x).lower(), str(x))
                for x in f["missing_scopes"])
        self.faults = f

    def faults_public(self):
        out = {}
        for k, v in self.faults.items():
            out[k] = sorted(v) if isinstance(v, set) else v
        return out

    # -- helpers -------------------------------------------------------------

    def resolve_type(self, t):
        r = self.aliases.get(t) or self.aliases.get(str(t).lower())
        if r is None:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Unable to infer object type from: %s" % t)
        return r

    @staticmethod
    def _norm(t, name, v):
        if name == "email":
            return v.lower()
        return v

    def new_id(self):
        self.next_id += 1
        return str(self.next_id - 1)

    def unique_props(self, t):
        return self.uniq[t]

    def find_by(self, t, prop, value):
        """Non-archived object whose unique prop equals value."""
        if prop in ("hs_object_id", None):
            o = self.objects[t].get(str(value))
            return o if o and not o["archived"] else None
        idx = self.uniq[t].get(prop)
        if idx is None:
            return None
        oid = idx.get(self._norm(t, prop, str(value)))
        o = self.objects[t][oid] if oid else None
        return o if o and not o["archived"] else None

    def owner_ids(self):
        return [o["id"] for o in self.owners]

    # -- property validation -------------------------------------------------

    def coerce(self, v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return ""
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, str):
            return v
        raise bad_json("Cannot deserialize value of type `java.lang.String` "
                       "from %s value" % ("Object" if isinstance(v, dict)
                                          else "Array"))

    def check_props_shape(self, props):
        if props is None:
            return {}
        if not isinstance(props, dict):
            raise bad_json("Cannot deserialize value of type "
                           "`java.util.LinkedHashMap<java.lang.String,"
                           "java.lang.String>` from non-object value")
        return {str(k): self.coerce(v) for k, v in props.items()}

    def validate(self, t, props, obj, ctx, pending=None):
        """Validate and normalise property values for object obj (None when
        creating).  Returns the normalised dict or raises InputError."""
        defs = self.props[t]
        errs = []
        out = {}
        for name, v in props.items():
            d = defs.get(name)
            if d is None:
                errs.append(perr(name, "PROPERTY_DOESNT_EXIST",
                                 'Property "%s" does not exist' % name))
                continue
            if name in READ_ONLY:
                errs.append(perr(name, "READ_ONLY_VALUE",
                                 '"%s" is a read only property; its value '
                                 'cannot be set.' % name))
                continue
            if v == "":
                out[name] = ""
                continue
            if len(v.encode("utf-16-le")) // 2 > MAX_VALUE_CHARS:
                errs.append(perr(name, "INVALID_PROPERTY_VALUE_LENGTH",
                                 'Property "%s" has a value of %d characters; '
                                 'the maximum is %d.'
                                 % (name, len(v.encode("utf-16-le")) // 2,
                                    MAX_VALUE_CHARS)))
                continue
            typ = d["type"]
            nv = v
            if typ == "number":
                if not NUMBER_RE.match(v.strip()):
                    errs.append(perr(name, "INVALID_INTEGER",
                                     "%s was not a valid number." % v))
                    continue
                nv = v.strip()
            elif typ == "date":
                nv = self._norm_date(v)
                if nv is None:
                    errs.append(perr(name, "INVALID_DATE",
                                     "%s was not a valid date (YYYY-MM-DD or "
                                     "epoch milliseconds at midnight UTC)."
                                     % v))
                    continue
                if nv.startswith("!"):
                    errs.append(perr(name, "INVALID_DATE", nv[1:]))
                    continue
            elif typ == "datetime":
                nv = self._norm_datetime(v)
                if nv is None:
                    errs.append(perr(name, "INVALID_DATE",
                                     "%s was not a valid date-time (ISO 8601 "
                                     "or epoch milliseconds)." % v))
                    continue
            elif typ == "bool":
                if v.lower() not in ("true", "false"):
                    errs.append(perr(name, "INVALID_BOOLEAN",
                                     "%s was not a valid boolean; use true or "
                                     "false." % v))
                    continue
                nv = v.lower()
            elif typ == "enumeration":
                allowed = None
                if name == "hubspot_owner_id":
                    allowed = self.owner_ids()
                elif t == "deals" and name == "pipeline":
                    allowed = list(self.pipelines)
                elif t == "deals" and name == "dealstage":
                    pid = props.get("pipeline") or (
                        obj["properties"].get("pipeline") if obj else None
                    ) or "default"
                    pl = self.pipelines.get(pid)
                    allowed = [s["id"] for s in pl["stages"]] if pl else []
                elif d["options"]:
                    allowed = [o["value"] for o in d["options"]]
                if allowed is not None:
                    vals = v.split(";") if d["fieldType"] == "checkbox" \
                        else [v]
                    bad = [x for x in vals if x not in allowed]
                    if bad:
                        errs.append(perr(
                            name, "INVALID_OPTION",
                            '%s was not one of the allowed options: [%s]'
                            % (bad[0], ", ".join(allowed))))
                        continue
            if name == "email" and t == "contacts" and \
                    not EMAIL_RE.match(v):
                errs.append(perr(name, "INVALID_EMAIL",
                                 "Email address %s is invalid" % v))
                continue
            if t == "line_items" and name == "price":
                try:
                    if Decimal(nv) < 0:
                        errs.append(perr(name, "INVALID_DECIMAL",
                                         "%s is not a valid price; price "
                                         "must not be negative" % v))
                        continue
                except InvalidOperation:
                    pass
            if t == "line_items" and name == "hs_product_id":
                pr = self.objects["products"].get(nv)
                if pr is None or pr["archived"]:
                    errs.append(perr(name, "INVALID_OBJECT_ID",
                                     "Product with id %s does not exist" % v))
                    continue
            out[name] = nv
        # the portal's required properties (validation rules)
        for name in self.cfg.required_properties.get(t, []):
            if (obj is None and not out.get(name)) or \
                    (obj is not None and out.get(name, None) == ""):
                errs.append(perr(name, "REQUIRED_PROPERTY",
                                 'Property "%s" is required' % name))
        if errs:
            raise prop_errors_input(ctx, errs)
        # unique values held by another object (or earlier in this batch)
        for name, v in out.items():
            if name in self.uniq[t] and v != "":
                key = self._norm(t, name, v)
                holder = self.uniq[t][name].get(key)
                if holder is None and pending is not None:
                    holder = pending.get((name, key))
                if holder is not None and (obj is None or
                                           holder != obj["id"]):
                    if t == "contacts" and name == "email":
                        msg = "Contact already exists. Existing ID: %s" \
                            % holder
                    else:
                        msg = ('A %s with %s "%s" already exists. Existing '
                               'ID: %s' % (SINGULAR.get(t, "object"), name,
                                           v, holder))
                    raise InputError(409, "CONFLICT", msg, ctx, [
                        {"message": msg, "code": "OBJECT_ALREADY_EXISTS",
                         "context": {"propertyName": [name],
                                     "existingId": [holder]}}])
        return out

    @staticmethod
    def _norm_date(v):
        m = DATE_RE.match(v)
        if m:
            try:
                datetime.date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                return None
            return v
        if EPOCH_RE.match(v):
            ms = int(v)
            if ms % 86400000:
                secs = (ms % 86400000) / 1000.0
                return "!%s is at %d:%d:%06.3f UTC, not midnight!" % (
                    v, secs // 3600, secs % 3600 // 60, secs % 60)
            return datetime.datetime.fromtimestamp(
                ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")
        return None

    @staticmethod
    def _norm_datetime(v):
        if EPOCH_RE.match(v):
            return now_iso(int(v) / 1000.0)
        m = DATETIME_RE.match(v)
        if not m:
            return None
        try:
            y, mo, d = int(m[1]), int(m[2]), int(m[3])
            hh, mi, ss = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
            frac = (m[7] or "0")[:3].ljust(3, "0")
            tz = m[8]
            if tz in (None, "Z"):
                off = datetime.timedelta(0)
            else:
                sign = -1 if tz[0] == "-" else 1
                digits = tz[1:].replace(":", "")
                off = sign * datetime.timedelta(hours=int(digits[:2]),
                                                minutes=int(digits[2:]))
            dt = datetime.datetime(y, mo, d, hh, mi, ss, int(frac) * 1000,
                                   datetime.timezone(off))
        except ValueError:
            return None
        return now_iso(dt.timestamp())

    # -- object writes -------------------------------------------------------

    def apply(self, t, obj, props, ts):
        p = obj["properties"]
        for name, v in props.items():
            if name in self.uniq[t]:
                old = p.get(name)
                idx = self.uniq[t][name]
                if old not in (None, ""):
                    k = self._norm(t, name, old)
                    if idx.get(k) == obj["id"]:
                        del idx[k]
                if v != "":
                    idx[self._norm(t, name, v)] = obj["id"]
            if v == "":
                p.pop(name, None)
            else:
                p[name] = v
        if t == "line_items":
            self._line_item_calc(p)
        obj["updatedAt"] = ts

    def _line_item_calc(self, p):
        try:
            q = Decimal(p["quantity"])
            pr = Decimal(p["price"])
        except (KeyError, InvalidOperation):
            return
        try:
            disc = Decimal(p.get("discount") or "0")
        except InvalidOperation:
            disc = Decimal(0)
        amt = q * pr - disc
        p["amount"] = format(amt.normalize(), "f") if amt else "0"

    def create(self, t, props, ts):
        oid = self.new_id()
        obj = {"id": oid, "properties": {}, "createdAt": ts, "updatedAt": ts,
               "archived": False}
        if t == "line_items" and props.get("hs_product_id"):
            pr = self.objects["products"][props["hs_product_id"]]
            for k in ("name", "price", "hs_sku", "description"):
                if k not in props and k in pr["properties"]:
                    props[k] = pr["properties"][k]
        if t == "deals" and "pipeline" not in props and \
                props.get("dealstage"):
            props["pipeline"] = "default"
        self.objects[t][oid] = obj
        self.created_at[(t, oid)] = time.time()
        self.apply(t, obj, props, ts)
        return obj

    def archive(self, t, obj, ts):
        if obj["archived"]:
            return
        obj["archived"] = True
        obj["archivedAt"] = ts
        obj["updatedAt"] = ts
        if not self.cfg.unique_reuse_after_archive:
            return              # the archived object keeps its values
        for name, idx in self.uniq[t].items():
            v = obj["properties"].get(name)
            if v not in (None, ""):
                k = self._norm(t, name, v)
                if idx.get(k) == obj["id"]:
                    del idx[k]

    def getprop(self, obj, name):
        if name == "hs_object_id":
            return obj["id"]
        if name == "hs_lastmodifieddate" or name == "lastmodifieddate":
            return obj["updatedAt"]
        if name == "createdate":
            return obj["properties"].get("createdate") or obj["createdAt"]
        return obj["properties"].get(name)

    def out(self, t, obj, props=None, echo=None):
        if props is None and echo is None:
            props = DEFAULT_READ_PROPS.get(
                t, ["createdate", "hs_lastmodifieddate", "hs_object_id"])
        if props is not None:
            # HubSpot's properties are strings: unset ones are left out
            pd = {k: v for k, v in ((k, self.getprop(obj, k)) for k in props)
                  if v is not None}
        else:
            pd = dict(obj["properties"])
            for k in echo:
                pd.setdefault(k, "")
            pd["hs_object_id"] = obj["id"]
            pd["hs_lastmodifieddate"] = obj["updatedAt"]
            pd.setdefault("createdate", obj["createdAt"])
        r = {"id": obj["id"], "properties": pd,
             "createdAt": obj["createdAt"], "updatedAt": obj["updatedAt"],
             "archived": obj["archived"]}
        if obj["archived"]:
            r["archivedAt"] = obj.get("archivedAt")
        return r

    def order(self, results):
        if self.cfg.shuffle_results and len(results) > 1:
            orig = list(results)
            self.rng.shuffle(results)
            if results == orig:
                results.reverse()
        return results

    # -- associations --------------------------------------------------------

    def default_def(self, ft, tt):
        for (cat, tid), label in self.defs.get((ft, tt), {}).items():
            if label is None:
                return cat, tid
        custom = [x for x in (ft, tt) if x not in STANDARD_TYPES]
        if not custom:
            return None
        a = self.next_assoc_type
        self.next_assoc_type += 2
        b = a if ft == tt else a + 1
        self._add_def(ft, tt, "USER_DEFINED", a, None, b)
        if ft != tt:
            self._add_def(tt, ft, "USER_DEFINED", b, None, a)
        return "USER_DEFINED", a

    def link(self, ft, fid, tt, tid, cat, typ):
        self.assoc.setdefault((ft, fid, tt), {}).setdefault(
            tid, set()).add((cat, typ))
        inv = self.inverse.get((ft, tt, cat, typ))
        if inv is not None:
            self.assoc.setdefault((tt, tid, ft), {}).setdefault(
                fid, set()).add((cat, inv))

    def unlink(self, ft, fid, tt, tid, only=None):
        for a, ai, b, bi in ((ft, fid, tt, tid), (tt, tid, ft, fid)):
            m = self.assoc.get((a, ai, b))
            if m and bi in m:
                if only is None:
                    del m[bi]
                else:
                    m[bi] -= only if a == ft else {
                        (c, self.inverse.get((ft, tt, c, x)))
                        for c, x in only}
                    if not m[bi]:
                        del m[bi]

    def types_out(self, ft, tt, pairs):
        defs = self.defs.get((ft, tt), {})
        return [{"category": c, "typeId": x, "label": defs.get((c, x))}
                for c, x in sorted(pairs, key=lambda p: p[1])]

    def exists(self, t, oid):
        o = self.objects[t].get(str(oid))
        return o is not None and not o["archived"]


# ---------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------

def type_scope(t, write, granular=False):
    rw = "write" if write else "read"
    if t in ("products", "line_items"):
        return "crm.objects.%s.%s" % (t, rw) if granular else "e-commerce"
    if t in ("contacts", "companies", "deals"):
        return "crm.objects.%s.%s" % (t, rw)
    return "crm.objects.custom.%s" % rw


def schema_scope(t, write, granular=False):
    rw = "write" if write else "read"
    if t in ("products", "line_items"):
        return "crm.objects.%s.%s" % (t, rw) if granular else "e-commerce"
    if t in ("contacts", "companies", "deals"):
        return "crm.schemas.%s.%s" % (t, rw)
    return "crm.schemas.custom.%s" % rw


def int_id(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return x


class Api:
    """Routes and executes API calls.  Called with LOCK held."""

    def __init__(self, st):
        self.st = st

    # -- routing -------------------------------------------------------------

    def scopes_needed(self, method, parts):
        """(object types, write?, schema?) touched by the call, for 403."""
        st = self.st
        write = method != "GET"
        try:
            if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4:
                w = write and not (len(parts) >= 5 and parts[4] == "search") \
                    and not (parts[-1] == "read")
                return [st.resolve_type(parts[3])], w, False
            if parts[:3] == ["crm", "v4", "associations"] and len(parts) >= 5:
                return [st.resolve_type(parts[3]),
                        st.resolve_type(parts[4])], write, False
            if parts[:3] == ["crm", "v4", "objects"] and len(parts) >= 6:
                to = parts[7] if len(parts) > 7 and parts[6] == "default" \
                    else (parts[6] if len(parts) > 6 else None)
                types = [st.resolve_type(parts[3])]
                if to:
                    types.append(st.resolve_type(to))
                return types, write, False
            if parts[:3] == ["crm", "v3", "properties"] and len(parts) >= 4:
                return [st.resolve_type(parts[3])], write, True
            if parts[:3] == ["crm", "v3", "pipelines"] and len(parts) >= 4:
                return [st.resolve_type(parts[3])], write, True
        except ApiError:
            pass
        return [], write, False

    def route(self, method, parts, q, body):
        p = parts
        n = len(p)
        # the current association label path (schema v4, or date-versioned)
        # is the old /crm/v4/associations/{from}/{to}/labels
        if n >= 6 and p[:2] == ["crm", "associations"] and \
                p[5] == "labels" and (p[2] == "v4" or DATEVER_RE.match(p[2])):
            p = ["crm", "v4", "associations", p[3], p[4]] + p[5:]
            n = len(p)
        if n >= 4 and p[:3] == ["crm", "v3", "objects"]:
            t = self.st.resolve_type(p[3])
            if n == 4:
                if method == "GET":
                    return self.list_objects(t, q)
                if method == "POST":
                    return self.create_one(t, body)
            elif n == 5 and p[4] == "search" and method == "POST":
                return self.search(t, body)
            elif n == 6 and p[4] == "batch" and method == "POST":
                op = p[5]
                if op == "upsert":
                    return self.batch_upsert(t, body)
                if op == "create":
                    return self.batch_create(t, body)
                if op == "update":
                    return self.batch_update(t, body)
                if op == "archive":
                    return self.batch_archive(t, body)
                if op == "read":
                    return self.batch_read(t, body, q)
            elif n == 5:
                if method == "GET":
                    return self.get_one(t, p[4], q)
                if method == "PATCH":
                    return self.update_one(t, p[4], body, q)
                if method == "DELETE":
                    return self.delete_one(t, p[4])
        elif n >= 5 and p[:3] == ["crm", "v4", "associations"]:
            ft, tt = self.st.resolve_type(p[3]), self.st.resolve_type(p[4])
            rest = p[5:]
            if method == "POST":
                if rest == ["batch", "associate", "default"]:
                    return self.assoc_default(ft, tt, body)
                if rest == ["batch", "create"]:
                    return self.assoc_create(ft, tt, body)
                if rest == ["batch", "archive"]:
                    return self.assoc_archive(ft, tt, body)
                if rest == ["batch", "read"]:
                    return self.assoc_read(ft, tt, body)
                if rest == ["labels"]:
                    return self.label_create(ft, tt, body)
            if method == "GET" and rest == ["labels"]:
                return 200, {"results": [
                    {"category": c, "typeId": x, "label": lab}
                    for (c, x), lab in
                    self.st.defs.get((ft, tt), {}).items()]}
        elif n >= 6 and p[:3] == ["crm", "v4", "objects"] and \
                p[5] == "associations":
            ft = self.st.resolve_type(p[3])
            fid = p[4]
            if n == 7 and method == "GET":
                return self.assoc_list(ft, fid, self.st.resolve_type(p[6]), q)
            if n == 9 and p[6] == "default" and method == "PUT":
                return self.assoc_default(
                    ft, self.st.resolve_type(p[7]),
                    {"inputs": [{"from": {"id": fid}, "to": {"id": p[8]}}]},
                    single=True)
            if n == 8 and method == "PUT":
                return self.assoc_put(ft, fid, self.st.resolve_type(p[6]),
                                      p[7], body)
            if n == 8 and method == "DELETE":
                self.st.unlink(ft, fid, self.st.resolve_type(p[6]), p[7])
                return 204, None
        elif n >= 4 and p[:3] == ["crm", "v3", "properties"]:
            t = self.st.resolve_type(p[3])
            if n == 4 and method == "GET":
                return 200, {"results": [
                    d for d in self.st.props[t].values()
                    if not d["archived"]]}
            if n == 4 and method == "POST":
                return self.property_create(t, body)
            if n == 5 and p[4] == "groups":
                if method == "GET":
                    return 200, {"results": list(self.st.groups[t].values())}
                if method == "POST":
                    return self.group_create(t, body)
            if n == 5 and method == "GET":
                d = self.st.props[t].get(p[4])
                if d is None:
                    raise ApiError(404, "OBJECT_NOT_FOUND",
                                   "Unable to find property %s for object "
                                   "type %s" % (p[4], t))
                return 200, d
            if n == 6 and p[4] == "groups" and method == "GET":
                g = self.st.groups[t].get(p[5])
                if g is None:
                    raise ApiError(404, "OBJECT_NOT_FOUND",
                                   "Unable to find property group %s" % p[5])
                return 200, g
        elif n >= 4 and p[:3] == ["crm", "v3", "pipelines"]:
            t = self.st.resolve_type(p[3])
            if t != "deals":
                raise ApiError(400, "VALIDATION_ERROR",
                               "The mock only knows deal pipelines")
            if n == 4 and method == "GET":
                return 200, {"results": list(self.st.pipelines.values())}
            if n == 4 and method == "POST":
                return self.pipeline_create(body)
            if n in (5, 6):
                pl = self.st.pipelines.get(p[4])
                if pl is None:
                    raise ApiError(404, "OBJECT_NOT_FOUND",
                                   "Unable to find pipeline %s" % p[4])
                if n == 5 and method == "GET":
                    return 200, pl
                if n == 6 and p[5] == "stages" and method == "GET":
                    return 200, {"results": pl["stages"]}
        elif p == ["crm", "v3", "limits", "pipelines"] and method == "GET":
            return 200, {
                "hubspotDefinedObjectTypes": [{
                    "objectTypeId": "0-3", "pluralLabel": "Deals",
                    "singularLabel": "Deal",
                    "limit": self.st.cfg.deal_pipeline_limit,
                    "usage": len(self.st.pipelines),
                    "percentage": round(100.0 * len(self.st.pipelines) /
                                        max(self.st.cfg.deal_pipeline_limit,
                                            1), 1)}],
                "customObjectTypes": {"byObjectType": [], "overallLimit": 0,
                                      "overallPercentage": 0,
                                      "overallUsage": 0}}
        elif p[:3] == ["crm", "v3", "owners"]:
            if method == "GET":
                owners = self.st.owners
                if n == 4:
                    for o in owners:
                        if o["id"] == p[3]:
                            return 200, o
                    raise ApiError(404, "OBJECT_NOT_FOUND",
                                   "Owner %s not found" % p[3])
                # HubSpot lists active owners, or with archived=true only
                # the deactivated ones; limit (1-500, default 100) a page,
                # paging.next.after to the next page
                archived = q.get("archived", ["false"])[0].lower() == "true"
                owners = [o for o in owners
                          if bool(o.get("archived")) == archived]
                if "email" in q:
                    em = q["email"][0].lower()
                    owners = [o for o in owners if o["email"].lower() == em]
                try:
                    limit = int(q.get("limit", ["100"])[0])
                    start = int(q.get("after", ["0"])[0] or 0)
                except ValueError:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "limit and after must be integers")
                if limit < 1 or limit > 500 or start < 0:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "limit must be 1 to 500")
                out = {"results": owners[start:start + limit]}
                if start + limit < len(owners):
                    nxt = str(start + limit)
                    out["paging"] = {"next": {
                        "after": nxt,
                        "link": "https://api.hubapi.com/crm/v3/owners?after="
                                + nxt}}
                return 200, out
        elif p == ["account-info", "v3", "details"] and method == "GET":
            return 200, {"portalId": PORTAL_ID, "accountType": "STANDARD",
                         "timeZone": "Europe/Warsaw",
                         "companyCurrency": "PLN",
                         "additionalCurrencies": ["EUR", "USD"],
                         "utcOffset": "+01:00",
                         "utcOffsetMilliseconds": 3600000,
                         "uiDomain": "app-eu1.hubspot.com",
                         "dataHostingLocation": "eu1"}
        elif p == ["account-info", "v3", "api-usage", "daily",
                   "private-apps"] and method == "GET":
            return 200, {"results": [{
                "name": "private-apps-api-calls-daily",
                "usageLimit": self.st.cfg.daily_limit,
                "currentUsage": self.st.daily_used,
                "collectedAt": now_iso(), "fetchStatus": "SUCCESS",
                "resetsAt": next_midnight_portal().astimezone(
                    datetime.timezone.utc).strftime(
                        "%Y-%m-%dT%H:%M:%SZ")}]}
        raise ApiError(404, "OBJECT_NOT_FOUND",
                       "No route for %s /%s (hubspot mock)"
                       % (method, "/".join(parts)))

    def token_info(self, body, cid):
        check_keys(body, {"tokenKey"}, "AccessTokenInfoRequest")
        tok = body.get("tokenKey")
        if tok not in self.st.cfg.tokens:
            raise ApiError(401, "INVALID_AUTHENTICATION",
                           "The access token provided is invalid.")
        return 200, {"userId": 9000001, "hubId": PORTAL_ID,
                     "appId": 2000001, "scopes": self.scopes()}

    def scopes(self):
        missing = self.st.faults.get("missing_scopes", set())
        out = list(ALL_SCOPES_BASE)
        for t in self.st.types:
            if t in missing:
                continue
            for w in (False, True):
                for s in (type_scope(t, w, self.st.cfg.granular_scopes),
                          schema_scope(t, w, self.st.cfg.granular_scopes)):
                    if s not in out:
                        out.append(s)
        if any(t in missing for t in ("products", "line_items")):
            out = [s for s in out if s != "e-commerce"]
        return sorted(out)

    # -- common batch parsing ------------------------------------------------

    def inputs_of(self, body, top_allowed, cls):
        if not isinstance(body, dict):
            raise bad_json("expected an object with inputs")
        check_keys(body, top_allowed, cls)
        if "inputs" not in body:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [inputs]")
        inputs = body["inputs"]
        if not isinstance(inputs, list):
            raise bad_json("Cannot deserialize value of type "
                           "`java.util.ArrayList` from non-array value")
        if len(inputs) > BATCH_LIMIT:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Batch input limit is %d; got %d inputs."
                           % (BATCH_LIMIT, len(inputs)),
                           context={"limit": [str(BATCH_LIMIT)]})
        return inputs

    @staticmethod
    def dup_check(ids):
        seen, dups = set(), []
        for i in ids:
            if i in seen and i not in dups:
                dups.append(i)
            seen.add(i)
        if dups:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Duplicate IDs found in batch input: [%s]. IDs "
                           "must be unique" % ", ".join(dups),
                           context={"ids": dups})

    def batch_answer(self, results, errs, ok_status):
        st = self.st
        t0 = now_iso()
        if errs and not results:
            raise batch_failed(errs)
        body = {"status": "COMPLETE", "results": st.order(results),
                "startedAt": t0, "completedAt": now_iso()}
        if errs:
            body["numErrors"] = len(errs)
            body["errors"] = [e.entry() for e in errs]
            return 207, body
        return ok_status, body

    def rejected(self, v, ctx, name):
        rej = self.st.faults.get("reject_ids")
        if rej and str(v) in rej:
            raise prop_errors_input(ctx, [perr(
                name, "INVALID_OPTION",
                "Value %s was rejected (mock reject_ids)" % v)])

    # -- objects -------------------------------------------------------------

    def batch_upsert(self, t, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"},
                                "BatchInputSimplePublicObjectBatchInputUpsert")
        keys = []
        for inp in inputs:
            check_keys(inp, {"idProperty", "id", "properties",
                             "objectWriteTraceId"},
                       "SimplePublicObjectBatchInputUpsert")
            if "id" not in inp or inp["id"] in (None, ""):
                raise ApiError(400, "VALIDATION_ERROR",
                               "Invalid input JSON on line 1, column 2: Some "
                               "required fields were not set: [id]")
            idp = inp.get("idProperty") or "hs_object_id"
            if not isinstance(idp, str):
                raise bad_json("idProperty must be a string")
            if idp != "hs_object_id":
                if idp not in st.props[t]:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   'Property "%s" does not exist' % idp)
                if idp not in st.uniq[t]:
                    raise ApiError(
                        400, "VALIDATION_ERROR",
                        "Unable to perform update/upsert by non-unique %s "
                        "property: %s" % (SINGULAR.get(t, t), idp))
            inp["properties"] = st.check_props_shape(inp.get("properties"))
            v = st.coerce(inp["id"])
            inp["id"] = v
            keys.append(st._norm(t, idp, v))
        self.dup_check(keys)
        if st.cfg.upsert_whole_batch:
            self._upsert_precheck(t, inputs)
        ts = now_iso()
        results, errs = [], []
        for inp in inputs:
            idp = inp.get("idProperty") or "hs_object_id"
            v = inp["id"]
            ctx = {"ids": [v]}
            try:
                self.rejected(v, ctx, idp)
                props = inp["properties"]
                if idp in props and props[idp] != "" and \
                        st._norm(t, idp, props[idp]) != st._norm(t, idp, v):
                    raise prop_errors_input(ctx, [perr(
                        idp, "INVALID_OPTION",
                        "%s in properties (%s) differs from the upsert id %s"
                        % (idp, props[idp], v))])
                obj = st.find_by(t, idp, v)
                if obj is None and idp == "hs_object_id":
                    raise InputError(404, "OBJECT_NOT_FOUND",
                                     "Object %s not found" % v, ctx)
                if obj is None:
                    props = dict(props)
                    props[idp] = v
                norm = st.validate(t, props, obj, ctx)
                if obj is None:
                    obj = st.create(t, norm, ts)
                    new = True
                else:
                    st.apply(t, obj, norm, ts)
                    new = False
                r = st.out(t, obj, echo=[k for k, x in norm.items()
                                         if x == ""])
                r["new"] = new
                if "objectWriteTraceId" in inp:
                    r["objectWriteTraceId"] = inp["objectWriteTraceId"]
                results.append(r)
            except InputError as e:
                errs.append(e)
        return self.batch_answer(results, errs, 200)

    def _upsert_precheck(self, t, inputs):
        """upsert_whole_batch: validate every input first; one bad input
        fails the whole batch (its status, no input named), nothing is
        written."""
        st = self.st
        errs = []
        pending = {}
        for i, inp in enumerate(inputs):
            idp = inp.get("idProperty") or "hs_object_id"
            v = inp["id"]
            ctx = {"ids": [v]}
            try:
                self.rejected(v, ctx, idp)
                props = dict(inp["properties"])
                obj = st.find_by(t, idp, v)
                if obj is None and idp == "hs_object_id":
                    raise InputError(404, "OBJECT_NOT_FOUND",
                                     "Object %s not found" % v, ctx)
                if obj is None:
                    props[idp] = v
                norm = st.validate(t, props, obj, ctx, pending)
                for name in st.uniq[t]:
                    if norm.get(name):
                        pending[(name, st._norm(t, name, norm[name]))] = \
                            obj["id"] if obj else "(batch input %d)" % i
            except InputError as e:
                errs.append(e)
        if errs:
            e0 = errs[0]
            raise ApiError(e0.status, e0.category, e0.message,
                           errors=[{"message": e.message, "code": e.category}
                                   for e in errs], sub=e0.sub)

    def _inline_assocs(self, t, assocs, ctx):
        st = self.st
        if assocs is None:
            return []
        if not isinstance(assocs, list):
            raise bad_json("associations must be an array")
        out = []
        for a in assocs:
            check_keys(a, {"to", "types"}, "PublicAssociationsForObject")
            to = a.get("to")
            types = a.get("types")
            if not isinstance(to, dict) or "id" not in to or \
                    not isinstance(types, list) or not types:
                raise bad_json("association needs to.id and types[]")
            check_keys(to, {"id"}, "PublicObjectId")
            for ty in types:
                check_keys(ty, {"associationCategory", "associationTypeId"},
                           "AssociationSpec")
                cat = ty.get("associationCategory", "HUBSPOT_DEFINED")
                tid = ty.get("associationTypeId")
                if cat not in ("HUBSPOT_DEFINED", "USER_DEFINED",
                               "INTEGRATOR_DEFINED") or \
                        not isinstance(tid, int):
                    raise bad_json("bad association type %r" % (ty,))
                tt = st.def_target.get((t, cat, tid))
                if tt is None:
                    raise InputError(
                        400, "VALIDATION_ERROR",
                        "%s %d is not a valid association type from %s"
                        % (cat, tid, t), ctx, sub="crm.associations."
                        "INVALID_ASSOCIATION_TYPE")
                toid = str(to["id"])
                if not st.exists(tt, toid):
                    raise InputError(
                        400, "VALIDATION_ERROR",
                        "No %s with ID %s exist" % (tt, toid), ctx,
                        sub="crm.associations.INVALID_OBJECT_IDS")
                out.append((tt, toid, cat, tid))
        return out

    def batch_create(self, t, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"},
                                "BatchInputSimplePublicObjectInputForCreate")
        traces = []
        for inp in inputs:
            check_keys(inp, {"properties", "associations",
                             "objectWriteTraceId"},
                       "SimplePublicObjectInputForCreate")
            inp["properties"] = st.check_props_shape(inp.get("properties"))
            traces.append(inp.get("objectWriteTraceId"))
        multi = all(x not in (None, "") for x in traces) and \
            len(set(traces)) == len(traces)
        ts = now_iso()
        # validation pass
        prepared, errs = [], []
        pending = {}
        for i, inp in enumerate(inputs):
            tr = inp.get("objectWriteTraceId")
            ctx = {"objectWriteTraceId": [tr]} if tr else {"index": [str(i)]}
            try:
                for name, v in inp["properties"].items():
                    if name in st.uniq[t]:
                        self.rejected(v, ctx, name)
                if tr:
                    self.rejected(tr, ctx, "objectWriteTraceId")
                norm = st.validate(t, dict(inp["properties"]), None, ctx,
                                   pending)
                links = self._inline_assocs(t, inp.get("associations"), ctx)
                for name in st.uniq[t]:
                    if norm.get(name):
                        pending[(name, st._norm(t, name, norm[name]))] = \
                            "(batch input %d)" % i
                prepared.append((inp, norm, links))
            except InputError as e:
                if not multi:
                    raise batch_failed([e])
                errs.append(e)
        results = []
        for inp, norm, links in prepared:
            obj = st.create(t, norm, ts)
            for tt, toid, cat, tid in links:
                st.link(t, obj["id"], tt, toid, cat, tid)
            r = st.out(t, obj, echo=[])
            if inp.get("objectWriteTraceId"):
                r["objectWriteTraceId"] = inp["objectWriteTraceId"]
            results.append(r)
        return self.batch_answer(results, errs, 201)

    def batch_update(self, t, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"},
                                "BatchInputSimplePublicObjectBatchInput")
        keys = []
        for inp in inputs:
            check_keys(inp, {"id", "idProperty", "properties",
                             "objectWriteTraceId"},
                       "SimplePublicObjectBatchInput")
            if "id" not in inp or inp["id"] in (None, ""):
                raise ApiError(400, "VALIDATION_ERROR",
                               "Invalid input JSON on line 1, column 2: Some "
                               "required fields were not set: [id]")
            idp = inp.get("idProperty") or "hs_object_id"
            if idp != "hs_object_id" and idp not in st.uniq[t]:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Unable to perform update/upsert by non-unique "
                               "%s property: %s" % (SINGULAR.get(t, t), idp))
            inp["properties"] = st.check_props_shape(inp.get("properties"))
            inp["id"] = st.coerce(inp["id"])
            keys.append(st._norm(t, idp, inp["id"]))
        self.dup_check(keys)
        ts = now_iso()
        results, errs = [], []
        for inp in inputs:
            idp = inp.get("idProperty") or "hs_object_id"
            v = inp["id"]
            ctx = {"ids": [v]}
            try:
                self.rejected(v, ctx, idp)
                obj = st.find_by(t, idp, v)
                if obj is None:
                    raise InputError(
                        404, "OBJECT_NOT_FOUND",
                        "Object not found.  objectId are usually numeric.",
                        ctx)
                norm = st.validate(t, inp["properties"], obj, ctx)
                st.apply(t, obj, norm, ts)
                r = st.out(t, obj, echo=[k for k, x in norm.items()
                                         if x == ""])
                if "objectWriteTraceId" in inp:
                    r["objectWriteTraceId"] = inp["objectWriteTraceId"]
                results.append(r)
            except InputError as e:
                errs.append(e)
        return self.batch_answer(results, errs, 200)

    def batch_archive(self, t, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"}, "BatchInputSimplePublicObjectId")
        for inp in inputs:
            check_keys(inp, {"id"}, "SimplePublicObjectId")
            if "id" not in inp:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Invalid input JSON on line 1, column 2: Some "
                               "required fields were not set: [id]")
        ts = now_iso()
        for inp in inputs:
            o = st.objects[t].get(str(inp["id"]))
            if o is not None:
                st.archive(t, o, ts)
        return 204, None

    def _props_param(self, q):
        if "properties" not in q:
            return None
        out = []
        for v in q["properties"]:
            out.extend(x for x in v.split(",") if x)
        return out

    def batch_read(self, t, body, q):
        st = self.st
        inputs = self.inputs_of(
            body, {"inputs", "properties", "propertiesWithHistory",
                   "idProperty"}, "BatchReadInputSimplePublicObjectId")
        props = body.get("properties")
        if props is not None and (not isinstance(props, list) or not all(
                isinstance(x, str) for x in props)):
            raise bad_json("properties must be an array of strings")
        idp = body.get("idProperty") or "hs_object_id"
        if idp != "hs_object_id" and idp not in st.uniq[t]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Unable to perform read by non-unique %s "
                           "property: %s" % (SINGULAR.get(t, t), idp))
        archived = q.get("archived", ["false"])[0] == "true"
        results, missing = [], []
        for inp in inputs:
            check_keys(inp, {"id"}, "SimplePublicObjectId")
            v = st.coerce(inp.get("id"))
            if archived and idp == "hs_object_id":
                o = st.objects[t].get(v)
                o = o if o and o["archived"] else None
            else:
                o = st.find_by(t, idp, v)
            if o is None:
                missing.append(v)
            else:
                results.append(st.out(t, o, props or None))
        t0 = now_iso()
        body = {"status": "COMPLETE", "results": results, "startedAt": t0,
                "completedAt": t0}
        if missing:
            body["numErrors"] = 1
            body["errors"] = [{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some %s objects, they may be "
                           "deleted or not exist. Check that ids are valid."
                           % t,
                "context": {"ids": missing}, "errors": [], "links": {}}]
            return 207, body
        return 200, body

    def _lookup(self, t, oid, q):
        st = self.st
        idp = q.get("idProperty", ["hs_object_id"])[0]
        if q.get("archived", ["false"])[0] == "true":
            o = st.objects[t].get(oid)
            if o is not None and o["archived"]:
                return o
            o = None
        else:
            o = st.find_by(t, idp, oid)
        if o is None:
            raise ApiError(404, "OBJECT_NOT_FOUND",
                           "Object not found.  objectId are usually numeric.",
                           context={"id": [oid]})
        return o

    def get_one(self, t, oid, q):
        o = self._lookup(t, unquote(oid), q)
        return 200, self.st.out(t, o, self._props_param(q))

    def update_one(self, t, oid, body, q):
        st = self.st
        check_keys(body, {"properties", "objectWriteTraceId"},
                   "SimplePublicObjectInput")
        o = self._lookup(t, unquote(oid), q)
        props = st.check_props_shape(body.get("properties"))
        try:
            self.rejected(oid, {"ids": [oid]}, "hs_object_id")
            norm = st.validate(t, props, o, {"ids": [oid]})
        except InputError as e:
            raise ApiError(e.status, e.category, e.message, errors=e.errors,
                           context=e.context, sub=e.sub)
        st.apply(t, o, norm, now_iso())
        return 200, st.out(t, o, echo=[])

    def delete_one(self, t, oid):
        o = self.st.objects[t].get(oid)
        if o is not None:
            self.st.archive(t, o, now_iso())
        return 204, None

    def create_one(self, t, body):
        st = self.st
        check_keys(body, {"properties", "associations", "objectWriteTraceId"},
                   "SimplePublicObjectInputForCreate")
        props = st.check_props_shape(body.get("properties"))
        try:
            norm = st.validate(t, props, None, {})
            links = self._inline_assocs(t, body.get("associations"), {})
        except InputError as e:
            raise ApiError(e.status, e.category, e.message, errors=e.errors,
                           sub=e.sub)
        obj = st.create(t, norm, now_iso())
        for tt, toid, cat, tid in links:
            st.link(t, obj["id"], tt, toid, cat, tid)
        return 201, st.out(t, obj, echo=[])

    def list_objects(self, t, q):
        st = self.st
        limit = min(int(q.get("limit", ["10"])[0]), 100)
        after = int(q.get("after", ["0"])[0] or 0)
        archived = q.get("archived", ["false"])[0] == "true"
        objs = [o for o in st.objects[t].values()
                if o["archived"] == archived and int(o["id"]) > after]
        page = objs[:limit]
        body = {"results": [st.out(t, o, self._props_param(q))
                            for o in page]}
        if len(objs) > limit:
            body["paging"] = {"next": {"after": page[-1]["id"]}}
        return 200, body

    # -- search --------------------------------------------------------------

    OPS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
           "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
           "NOT_CONTAINS_TOKEN"}

    def search(self, t, body):
        st = self.st
        check_keys(body, {"filterGroups", "properties", "limit", "after",
                          "sorts", "query"}, "PublicObjectSearchRequest")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit < 0 or \
                limit > SEARCH_LIMIT_MAX:
            raise ApiError(400, "VALIDATION_ERROR",
                           "limit must be between 0 and %d"
                           % SEARCH_LIMIT_MAX, context={"limit": [str(limit)]})
        try:
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "VALIDATION_ERROR", "after must be numeric")
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > 5:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Too many filter groups (max 5)")
        total_filters = 0
        for g in groups:
            check_keys(g, {"filters"}, "FilterGroup")
            fl = g.get("filters") or []
            if len(fl) > 6:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Too many filters in a group (max 6)")
            total_filters += len(fl)
            for f in fl:
                check_keys(f, {"propertyName", "operator", "value", "values",
                               "highValue"}, "Filter")
                if f.get("operator") not in self.OPS:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Unknown operator %r" % f.get("operator"))
                if f.get("propertyName") not in st.props[t] and \
                        f.get("propertyName") != "lastmodifieddate":
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Property %r does not exist"
                                   % f.get("propertyName"))
                if f["operator"] in ("IN", "NOT_IN") and \
                        not isinstance(f.get("values"), list):
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "IN needs values[]")
        if total_filters > 18:
            raise ApiError(400, "VALIDATION_ERROR", "Too many filters (max 18)")
        props = body.get("properties") or None
        if after >= st.cfg.search_max_total:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Search results are limited to %d; cannot page "
                           "to result %d" % (st.cfg.search_max_total, after),
                           context={"after": [str(after)]})
        limit = min(limit, st.cfg.search_max_total - after)
        unindexed = time.time() - st.cfg.search_index_delay_ms / 1000.0
        matches = []
        for o in st.objects[t].values():
            if o["archived"]:
                continue
            if st.created_at.get((t, o["id"]), 0) > unindexed:
                continue        # not indexed yet
            if not groups or any(all(self._match(t, o, f)
                                     for f in g.get("filters") or [])
                                 for g in groups):
                matches.append(o)
        sorts = body.get("sorts") or []
        for s in reversed(sorts):
            if isinstance(s, str):
                name, desc = s.lstrip("-"), s.startswith("-")
            else:
                name = s.get("propertyName")
                desc = s.get("direction", "ASCENDING") == "DESCENDING"
            matches.sort(key=lambda o: self._key(t, name, st.getprop(o, name)),
                         reverse=desc)
        page = matches[after:after + limit]
        out = {"total": len(matches),
               "results": [st.out(t, o, props) for o in page]}
        if after + limit < len(matches):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return 200, out

    def _key(self, t, name, v):
        if v is None:
            return (0, Decimal(0), "")
        d = self.st.props[t].get(name)
        typ = d["type"] if d else "string"
        if name == "hs_object_id" or typ == "number":
            try:
                return (1, Decimal(v), "")
            except InvalidOperation:
                pass
        if typ in ("date", "datetime") and EPOCH_RE.match(str(v)):
            return (1, Decimal(0), now_iso(int(v) / 1000.0))
        return (1, Decimal(0), str(v).lower())

    def _match(self, t, o, f):
        name, op = f["propertyName"], f["operator"]
        cur = self.st.getprop(o, name)
        if op == "HAS_PROPERTY":
            return cur not in (None, "")
        if op == "NOT_HAS_PROPERTY":
            return cur in (None, "")
        if op in ("IN", "NOT_IN"):
            keys = {self._key(t, name, str(x)) for x in f["values"]}
            inside = cur is not None and self._key(t, name, cur) in keys
            return inside if op == "IN" else not inside
        val = f.get("value")
        if op == "CONTAINS_TOKEN" or op == "NOT_CONTAINS_TOKEN":
            tok = str(val or "").lower().replace("*", "")
            has = cur is not None and tok in str(cur).lower()
            return has if op == "CONTAINS_TOKEN" else not has
        if cur in (None, ""):
            return op == "NEQ"
        a = self._key(t, name, cur)
        b = self._key(t, name, str(val))
        if op == "EQ":
            return a == b
        if op == "NEQ":
            return a != b
        if op == "LT":
            return a < b
        if op == "LTE":
            return a <= b
        if op == "GT":
            return a > b
        if op == "GTE":
            return a >= b
        if op == "BETWEEN":
            return b <= a <= self._key(t, name, str(f.get("highValue")))
        return False

    # -- associations --------------------------------------------------------

    def _pair_inputs(self, body, cls, with_types):
        inputs = self.inputs_of(body, {"inputs"}, cls)
        allowed = {"from", "to", "types"} if with_types else {"from", "to"}
        for inp in inputs:
            check_keys(inp, allowed, cls)
            for side in ("from", "to"):
                s = inp.get(side)
                if not isinstance(s, dict) or "id" not in s:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Invalid input JSON on line 1, column 2: "
                                   "Some required fields were not set: "
                                   "[%s]" % side)
                check_keys(s, {"id"}, "PublicObjectId")
            if with_types:
                types = inp.get("types")
                if not isinstance(types, list) or not types:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Invalid input JSON on line 1, column 2: "
                                   "Some required fields were not set: "
                                   "[types]")
                for ty in types:
                    check_keys(ty, {"associationCategory",
                                    "associationTypeId"}, "AssociationSpec")
                    if ty.get("associationCategory") not in (
                            "HUBSPOT_DEFINED", "USER_DEFINED",
                            "INTEGRATOR_DEFINED") or not isinstance(
                            ty.get("associationTypeId"), int) or \
                            isinstance(ty.get("associationTypeId"), bool):
                        raise bad_json("Cannot deserialize AssociationSpec "
                                       "from %s" % json.dumps(ty))
        return inputs

    def _ids_error(self, ft, fid, tt, tid):
        st = self.st
        ctx = {"fromObjectId": [fid], "toObjectId": [tid]}
        rej = st.faults.get("reject_ids")
        if rej and tid in rej:
            return InputError(400, "VALIDATION_ERROR",
                              "Association to %s %s was rejected (mock "
                              "reject_ids)" % (tt, tid), ctx,
                              sub="crm.associations.INVALID_OBJECT_IDS")
        if not st.exists(ft, fid):
            return InputError(400, "VALIDATION_ERROR",
                              "No %s with ID %s exist" % (ft, fid), ctx,
                              sub="crm.associations.INVALID_OBJECT_IDS")
        if not st.exists(tt, tid):
            return InputError(400, "VALIDATION_ERROR",
                              "No %s with ID %s exist" % (tt, tid), ctx,
                              sub="crm.associations.INVALID_OBJECT_IDS")
        return None

    def _v4_answer(self, results, errs, ok_status, partial_status=207):
        t0 = now_iso()
        body = {"status": "COMPLETE", "results": results, "startedAt": t0,
                "completedAt": t0}
        if errs:
            body["numErrors"] = len(errs)
            body["errors"] = [e.entry() for e in errs]
            return partial_status, body
        return ok_status, body

    def assoc_default(self, ft, tt, body, single=False):
        st = self.st
        inputs = self._pair_inputs(
            body, "BatchInputPublicDefaultAssociationMultiPost", False)
        d = st.default_def(ft, tt)
        if d is None:
            raise ApiError(400, "VALIDATION_ERROR",
                           "There is no default association between %s and "
                           "%s" % (ft, tt))
        cat, typ = d
        results, errs = [], []
        for inp in inputs:
            fid, tid = str(inp["from"]["id"]), str(inp["to"]["id"])
            e = self._ids_error(ft, fid, tt, tid)
            if e:
                errs.append(e)
                continue
            st.link(ft, fid, tt, tid, cat, typ)
            results.append({"from": {"id": fid}, "to": {"id": tid},
                            "associationSpec": {"associationCategory": cat,
                                                "associationTypeId": typ}})
        if single and errs:
            raise batch_failed(errs)
        # HubSpot's schema has no 207 here: the errors come inside a 200
        return self._v4_answer(results, errs, 200, 200)

    def assoc_create(self, ft, tt, body):
        st = self.st
        inputs = self._pair_inputs(
            body, "BatchInputPublicAssociationMultiPost", True)
        defs = st.defs.get((ft, tt), {})
        results, errs = [], []
        for inp in inputs:
            fid, tid = str(inp["from"]["id"]), str(inp["to"]["id"])
            e = self._ids_error(ft, fid, tt, tid)
            if e is None:
                for ty in inp["types"]:
                    key = (ty["associationCategory"], ty["associationTypeId"])
                    if key not in defs:
                        e = InputError(
                            400, "VALIDATION_ERROR",
                            "%s %d is not a valid association type between "
                            "%s and %s" % (key[0], key[1], ft, tt),
                            {"fromObjectId": [fid], "toObjectId": [tid]},
                            sub="crm.associations.INVALID_ASSOCIATION_TYPE")
                        break
            if e:
                errs.append(e)
                continue
            for ty in inp["types"]:
                st.link(ft, fid, tt, tid, ty["associationCategory"],
                        ty["associationTypeId"])
            pairs = st.assoc.get((ft, fid, tt), {}).get(tid, set())
            results.append({
                "fromObjectTypeId": TYPE_IDS.get(ft, ft),
                "fromObjectId": str(fid),
                "toObjectTypeId": TYPE_IDS.get(tt, tt),
                "toObjectId": str(tid),
                "labels": [x["label"] for x in st.types_out(ft, tt, pairs)
                           if x["label"]]})
        return self._v4_answer(results, errs, 201)

    def assoc_archive(self, ft, tt, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"},
                                "BatchInputPublicAssociationMultiArchive")
        for inp in inputs:
            check_keys(inp, {"from", "to"}, "PublicAssociationMultiArchive")
            fr, to = inp.get("from"), inp.get("to")
            if not isinstance(fr, dict) or "id" not in fr or \
                    not isinstance(to, list):
                raise ApiError(400, "VALIDATION_ERROR",
                               "Invalid input JSON on line 1, column 2: "
                               "archive inputs are {from:{id}, to:[{id}]}")
            check_keys(fr, {"id"}, "PublicObjectId")
            for x in to:
                check_keys(x, {"id"}, "PublicObjectId")
                if "id" not in x:
                    raise bad_json("to[] entries need id")
        for inp in inputs:
            fid = str(inp["from"]["id"])
            for x in inp["to"]:
                st.unlink(ft, fid, tt, str(x["id"]))
        return 204, None

    def assoc_read(self, ft, tt, body):
        st = self.st
        inputs = self.inputs_of(body, {"inputs"},
                                "BatchInputPublicFetchAssociationsBatchRequest")
        results, errs = [], []
        for inp in inputs:
            check_keys(inp, {"id", "after"}, "PublicFetchAssociationsBatchRequest")
            fid = str(inp.get("id"))
            m = st.assoc.get((ft, fid, tt), {})
            # an unlabelled type has no label (optional in HubSpot's model)
            to = [{"toObjectId": str(k),
                   "associationTypes": [
                       {x: y for x, y in spec.items()
                        if x != "label" or y is not None}
                       for spec in st.types_out(ft, tt, v)]}
                  for k, v in m.items() if v and st.exists(tt, k)]
            if not to:
                errs.append(InputError(
                    404, "OBJECT_NOT_FOUND",
                    "No %s is associated with %s %s." % (tt, ft, fid),
                    {"fromObjectId": [fid]}))
                continue
            results.append({"from": {"id": fid}, "to": to})
        return self._v4_answer(results, errs, 200)

    def assoc_list(self, ft, fid, tt, q):
        st = self.st
        m = st.assoc.get((ft, fid, tt), {})
        items = [(k, v) for k, v in m.items() if v and st.exists(tt, k)]
        items.sort(key=lambda kv: int_id(kv[0]) if
                   isinstance(int_id(kv[0]), int) else 0)
        limit = int(q.get("limit", ["500"])[0])
        after = int(q.get("after", ["0"])[0] or 0)
        page = items[after:after + limit]
        body = {"results": [{"toObjectId": str(k),
                             "associationTypes": st.types_out(ft, tt, v)}
                            for k, v in page]}
        if after + limit < len(items):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return 200, body

    def assoc_put(self, ft, fid, tt, tid, body):
        st = self.st
        if not isinstance(body, list) or not body:
            raise bad_json("expected an array of AssociationSpec")
        wrapped = {"inputs": [{"from": {"id": fid}, "to": {"id": tid},
                               "types": body}]}
        status, out = self.assoc_create(ft, tt, wrapped)
        if status == 207:
            e = out["errors"][0]
            raise ApiError(400, e["category"], e["message"],
                           context=e["context"], sub=e.get("subCategory"))
        return 200, out["results"][0]

    def label_create(self, ft, tt, body):
        st = self.st
        check_keys(body, {"label", "name", "inverseLabel"},
                   "PublicAssociationDefinitionCreateRequest")
        label, name = body.get("label"), body.get("name")
        if not isinstance(label, str) or not label or \
                not isinstance(name, str) or not name:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [label, name]")
        names = st.label_names.setdefault((ft, tt), set())
        if name in names:
            raise ApiError(409, "CONFLICT",
                           "An association label named '%s' already exists "
                           "between %s and %s" % (name, ft, tt))
        names.add(name)
        inv_label = body.get("inverseLabel")
        a = st.next_assoc_type
        st.next_assoc_type += 2
        if ft == tt and not inv_label:
            st._add_def(ft, tt, "USER_DEFINED", a, label, a)
            res = [{"category": "USER_DEFINED", "typeId": a, "label": label}]
        else:
            b = a + 1
            st._add_def(ft, tt, "USER_DEFINED", a, label, b)
            st._add_def(tt, ft, "USER_DEFINED", b, inv_label or label, a)
            res = [{"category": "USER_DEFINED", "typeId": a, "label": label},
                   {"category": "USER_DEFINED", "typeId": b,
                    "label": inv_label or label}]
        return 200, {"results": res}

    # -- properties and pipelines --------------------------------------------

    PROP_KEYS = {"name", "label", "type", "fieldType", "groupName",
                 "description", "displayOrder", "hidden", "formField",
                 "hasUniqueValue", "options", "calculationFormula",
                 "externalOptions", "referencedObjectType",
                 "dataSensitivity", "currencyPropertyName",
                 "numberDisplayHint", "showCurrencySymbol"}

    def property_create(self, t, body):
        st = self.st
        check_keys(body, self.PROP_KEYS, "PropertyCreate")
        missing = [k for k in ("name", "label", "type", "fieldType",
                               "groupName") if not body.get(k)]
        if missing:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [%s]"
                           % ", ".join(missing))
        name, typ, ft = body["name"], body["type"], body["fieldType"]
        if not isinstance(name, str) or not PROPNAME_RE.match(name) or \
                name.startswith("hs_"):
            raise ApiError(400, "VALIDATION_ERROR",
                           "Property name '%s' is invalid: use lower-case "
                           "letters, digits and underscores, starting with a "
                           "letter, and not the hs_ prefix" % name)
        if typ not in FIELD_TYPES:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Cannot "
                           "deserialize value of type `PropertyType` from "
                           "String \"%s\"" % typ)
        if ft not in FIELD_TYPES[typ]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Property type %s cannot be used with field type "
                           "%s" % (typ, ft))
        if body["groupName"] not in st.groups[t]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Property group %s does not exist."
                           % body["groupName"])
        if name in st.props[t]:
            raise ApiError(409, "CONFLICT",
                           "Property named '%s' already exists." % name,
                           sub="PropertyCrudError.PROPERTY_EXISTS")
        opts = body.get("options", [])
        if not isinstance(opts, list):
            raise bad_json("options must be an array")
        norm_opts = []
        for i, o in enumerate(opts):
            check_keys(o, {"label", "value", "displayOrder", "hidden",
                           "description"}, "OptionInput")
            if not o.get("label") or "value" not in o:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Every option needs label and value")
            norm_opts.append({"label": o["label"], "value": str(o["value"]),
                              "displayOrder": o.get("displayOrder", i),
                              "hidden": bool(o.get("hidden", False)),
                              "description": o.get("description", "")})
        unique = bool(body.get("hasUniqueValue", False))
        if unique and sum(1 for d in st.props[t].values()
                          if d["hasUniqueValue"]) >= 10:
            raise ApiError(400, "VALIDATION_ERROR",
                           "An object type can have at most 10 unique value "
                           "properties")
        p = st._put_prop(t, name, typ, body["groupName"], now_iso(),
                         label=body["label"], field_type=ft, unique=unique,
                         options=norm_opts,
                         description=body.get("description", ""))
        if "displayOrder" in body:
            p["displayOrder"] = body["displayOrder"]
        for k in ("hidden", "formField"):
            if k in body:
                p[k] = bool(body[k])
        return 201, p

    def group_create(self, t, body):
        st = self.st
        check_keys(body, {"name", "label", "displayOrder"},
                   "PropertyGroupCreate")
        if not body.get("name") or not body.get("label"):
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [name, label]")
        if body["name"] in st.groups[t]:
            raise ApiError(409, "CONFLICT",
                           "Property group named '%s' already exists."
                           % body["name"])
        g = {"name": body["name"], "label": body["label"],
             "displayOrder": body.get("displayOrder", -1), "archived": False}
        st.groups[t][g["name"]] = g
        return 201, g

    def pipeline_create(self, body):
        st = self.st
        check_keys(body, {"label", "displayOrder", "stages", "pipelineId"},
                   "PipelineInput")
        if not body.get("label") or "displayOrder" not in body or \
                not isinstance(body.get("stages"), list) or \
                not body["stages"]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [label, "
                           "displayOrder, stages]")
        if len(st.pipelines) >= st.cfg.deal_pipeline_limit:
            raise ApiError(400, "VALIDATION_ERROR",
                           "This portal has reached its limit of %d deal "
                           "pipelines" % st.cfg.deal_pipeline_limit,
                           sub="PipelineError.PIPELINE_LIMIT_REACHED")
        stages = []
        labels = set()
        for s in body["stages"]:
            check_keys(s, {"label", "displayOrder", "metadata", "stageId"},
                       "PipelineStageInput")
            if not s.get("label") or "displayOrder" not in s or \
                    not isinstance(s.get("metadata"), dict):
                raise ApiError(400, "VALIDATION_ERROR",
                               "Every stage needs label, displayOrder and "
                               "metadata")
            if s["label"] in labels:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Duplicate stage label '%s'" % s["label"])
            labels.add(s["label"])
            md = {str(k): str(v) for k, v in s["metadata"].items()}
            try:
                prob = float(md.get("probability", "x"))
                if not 0.0 <= prob <= 1.0 or math.isnan(prob):
                    raise ValueError
            except ValueError:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Stage '%s': metadata.probability must be a "
                               "number between 0.0 and 1.0" % s["label"],
                               sub="PipelineError.INVALID_PROBABILITY")
            md["probability"] = repr(prob)
            md.setdefault("isClosed", "true" if prob == 1.0 else "false")
            stages.append({"id": str(st.next_stage_id), "label": s["label"],
                           "displayOrder": s["displayOrder"],
                           "metadata": md})
            st.next_stage_id += 1
        pid = str(st.next_pipe_id)
        st.next_pipe_id += 1
        pl = st._pipeline(pid, body["label"], body["displayOrder"], stages,
                          now_iso())
        st.pipelines[pid] = pl
        return 201, pl


# ---------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------

EDGE_HTML = ("<html><head><title>%d %s</title></head><body><center><h1>%d "
             "%s</h1></center><hr><center>cloudflare</center></body></html>")
REASONS = {500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class Handler(BaseHTTPRequestHandler):
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
        parts = [unquote(x) for x in path.strip("/").split("/") if x]
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
        e = ApiError(429, "RATE_LIMITS",
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

    # -- control API ---------------------------------------------------------

    def control(self, method, path, q, raw, cid):
        st = self.server.state
        hdrs = [("X-HubSpot-Correlation-Id", cid)]
        parts = [unquote(x) for x in path.strip("/").split("/")][1:]
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            return self.emit(400, jdump({"status": "error",
                                         "message": "bad JSON: %s" % e}),
                             hdrs)
        try:
            with LOCK:
                status, out = self.control_route(st, method, parts, q, body)
                payload = jdump(out) if not isinstance(out, bytes) else out
        except ApiError as e:
            status, payload = e.status, jdump(e.body(cid))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            status, payload = 400, jdump({"status": "error",
                                          "message": "bad control input: %r"
                                          % (e,)})
        ctype = "text/plain" if parts == ["health"] else \
            "application/json;charset=utf-8"
        self.emit(status, payload, hdrs, ctype)

    def control_route(self, st, method, parts, q, body):
        if parts == ["health"]:
            return 200, b"ok"
        if parts == ["reset"] and method == "POST":
            st.reset()
            if body:
                st.apply_config(body)
            return 200, {"status": "ok"}
        if parts == ["config"]:
            if method == "POST":
                st.apply_config(body)
            return 200, st.cfg.public()
        if parts == ["faults"]:
            if method == "POST":
                st.set_faults(body)
            return 200, st.faults_public()
        if len(parts) == 2 and parts[0] == "objects":
            t = st.resolve_type(parts[1])
            if method == "POST":
                props = st.check_props_shape(body.get("properties"))
                obj = st.create(t, props, now_iso())
                return 201, st.out(t, obj, echo=[])
            return 200, {"results": [
                {"id": o["id"], "properties": o["properties"],
                 "archived": o["archived"], "createdAt": o["createdAt"],
                 "updatedAt": o["updatedAt"]}
                for o in st.objects[t].values()]}
        if len(parts) == 3 and parts[0] == "objects" and method == "DELETE":
            t = st.resolve_type(parts[1])
            o = st.objects[t].get(parts[2])
            if o is None:
                return 404, {"status": "error", "message": "no such object"}
            st.archive(t, o, now_iso())
            return 200, {"status": "ok"}
        if parts == ["associations"]:
            out = []
            for (ft, fid, tt), m in st.assoc.items():
                for tid, pairs in m.items():
                    for cat, typ in sorted(pairs, key=lambda p: p[1]):
                        out.append({"fromType": ft, "fromId": fid,
                                    "toType": tt, "toId": tid,
                                    "typeId": typ, "category": cat})
            return 200, {"results": out}
        if parts == ["requests"]:
            since = int(q.get("since", ["0"])[0])
            res = [e for e in st.log if e["seq"] > since]
            return 200, {"results": res, "lastSeq": st.seq}
        if parts == ["stats"]:
            objs = {}
            for t, m in st.objects.items():
                a = sum(1 for o in m.values() if o["archived"])
                objs[t] = {"active": len(m) - a, "archived": a}
            return 200, {
                "calls": st.calls,
                "byStatus": {str(k): v for k, v in
                             sorted(st.by_status.items())},
                "rateLimited": st.rate_limited,
                "maxWindowCalls": st.max_window_seen,
                "windowMs": st.cfg.window_ms,
                "dailyUsed": st.daily_used,
                "inputs": st.inputs_total,
                "cpuSeconds": time.process_time(),
                "uptimeSeconds": time.time() - st.started,
                "objects": objs,
                "associations": sum(len(m) for m in st.assoc.values())}
        return 404, {"status": "error",
                     "message": "unknown control path /_mock/%s"
                     % "/".join(parts)}


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


if __name__ == "__main__":
    sys.exit(main())

"""
state.py - the state of the mock portal.

Its configuration (Config, set by /_mock/config), its faults (set by
/_mock/faults), objects with their unique-value indexes, properties,
groups, pipelines, owners, associations, and the rate-limit windows, log
and counters.  Property values are validated here as HubSpot validates
them.  Every method is called with LOCK held.
"""

import collections
import datetime
import json
import random
import threading
import time
from decimal import Decimal, InvalidOperation

from .errors import ApiError, InputError, bad_json, perr, \
    prop_errors_input
from .model import (DATE_RE, DATETIME_RE, DEFAULT_OWNERS, DEFAULT_READ_PROPS,
                    DEFAULT_STAGES, EMAIL_RE, EPOCH_RE, FIELD_TYPES,
                    ORDER_PIPELINE_ID, ORDER_STAGES,
                    FIRST_OBJECT_ID, GROUPS, HUBSPOT_ASSOC_DEFS, NUMBER_RE,
                    READ_ONLY, SINGULAR, STANDARD_OPTIONS, STANDARD_PROPS,
                    STANDARD_TYPES, SYSTEM_PROPS, TYPE_ALIASES,
                    DEFAULT_FIELD_TYPE, API_SOURCE, HISTORY_MAX, now_iso)

LOCK = threading.Lock()


class Config:
    FIELDS = {"tokens", "max_per_window", "window_ms", "daily_limit",
              "daily_used", "search_per_second", "retry_after",
              "unique_properties", "properties", "custom_object_types",
              "log_bodies", "owners", "shuffle_results",
              "search_counts_in_window", "log_limit",
              "upsert_whole_batch", "search_index_delay_ms",
              "search_max_total", "unique_reuse_after_archive",
              "required_properties", "deal_pipeline_limit",
              "order_pipeline_limit", "order_type_name",
              "granular_scopes", "merge_new_id", "merged_ids",
              "gdpr_blocks_email", "contacts_hs_lastmodifieddate",
              "error_context_ids", "null_properties"}

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
        self.order_pipeline_limit = 100
        # how API paths must spell native orders (orders, order or 0-123;
        # None: any of them).  HubSpot's reference names the paths
        # /crm/v3/objects/orders, its guide /crm/v3/objects/order, and an
        # object type id is accepted wherever a type is: which spellings it
        # takes everywhere is not documented, so a test can allow one only
        self.order_type_name = None
        self.granular_scopes = False
        self.merge_new_id = True
        self.merged_ids = "follow"
        self.gdpr_blocks_email = False
        self.contacts_hs_lastmodifieddate = False
        self.error_context_ids = True
        self.null_properties = False

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
                "order_pipeline_limit": self.order_pipeline_limit,
                "order_type_name": self.order_type_name,
                "granular_scopes": self.granular_scopes,
                "merge_new_id": self.merge_new_id,
                "merged_ids": self.merged_ids,
                "gdpr_blocks_email": self.gdpr_blocks_email,
                "contacts_hs_lastmodifieddate":
                    self.contacts_hs_lastmodifieddate,
                "error_context_ids": self.error_context_ids,
                "null_properties": self.null_properties}


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
        self.merged = {}         # (type, id merged away) -> id it went to
        self.blocked_emails = set()     # gdpr-delete of an unknown e-mail
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
        self.order_pipelines = {ORDER_PIPELINE_ID: self._pipeline(
            ORDER_PIPELINE_ID, "Orders Pipeline", 0,
            [{"id": sid, "label": lab, "displayOrder": i, "metadata": {}}
             for i, (sid, lab) in enumerate(ORDER_STAGES)], t0)}
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
                  "search_max_total", "deal_pipeline_limit",
                  "order_pipeline_limit"):
            if k in c:
                setattr(cfg, k, int(c[k]))
        if "daily_used" in c:
            self.daily_used = int(c["daily_used"])
        for k in ("retry_after",):
            if k in c:
                setattr(cfg, k, c[k])
        for k in ("log_bodies", "shuffle_results", "search_counts_in_window",
                  "upsert_whole_batch", "unique_reuse_after_archive",
                  "granular_scopes", "merge_new_id", "gdpr_blocks_email",
                  "contacts_hs_lastmodifieddate", "error_context_ids",
                  "null_properties"):
            if k in c:
                setattr(cfg, k, bool(c[k]))
        if "order_type_name" in c:
            if c["order_type_name"] not in (None, "orders", "order",
                                            "0-123"):
                raise ApiError(400, "VALIDATION_ERROR",
                               "order_type_name must be null, orders, order "
                               "or 0-123")
            cfg.order_type_name = c["order_type_name"]
        if "merged_ids" in c:
            if c["merged_ids"] not in ("follow", "404"):
                raise ApiError(400, "VALIDATION_ERROR",
                               "merged_ids must be follow or 404")
            cfg.merged_ids = c["merged_ids"]
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
            o = self.objects[t].get(self.follow(t, str(value)))
            return o if o and not o["archived"] else None
        idx = self.uniq[t].get(prop)
        if idx is None:
            return None
        oid = idx.get(self._norm(t, prop, str(value)))
        o = self.objects[t][oid] if oid else None
        return o if o and not o["archived"] else None

    def follow(self, t, oid):
        """The id a merged-away id now points to (merged_ids "follow")."""
        if self.cfg.merged_ids == "follow":
            seen = set()
            while (t, oid) in self.merged and oid not in seen:
                seen.add(oid)
                oid = self.merged[(t, oid)]
        return oid

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
                elif t == "orders" and name == "hs_pipeline":
                    allowed = list(self.order_pipelines)
                elif t == "orders" and name == "hs_pipeline_stage":
                    pid = props.get("hs_pipeline") or (
                        obj["properties"].get("hs_pipeline") if obj else None
                    ) or ORDER_PIPELINE_ID
                    pl = self.order_pipelines.get(pid)
                    allowed = [s["id"] for s in pl["stages"]] if pl else []
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
            if name == "email" and t == "contacts" and \
                    v.lower() in self.blocked_emails:
                errs.append(perr(name, "INVALID_EMAIL",
                                 "Email address %s was permanently deleted "
                                 "(GDPR) and cannot be used again" % v))
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

    def apply(self, t, obj, props, ts, source=API_SOURCE):
        self._index_before(obj)
        p = obj["properties"]
        self._history(obj, props, ts, source)
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
        self._index_after(obj)

    def _history(self, obj, props, ts, source):
        """Versions of each changed value, as propertiesWithHistory shows."""
        hist = obj.setdefault("history", {})
        p = obj["properties"]
        for name, v in props.items():
            if name not in hist and v == "":
                continue        # never set, and cleared: nothing to keep
            if name in hist and p.get(name, "") == v:
                continue        # the same value again is no new version
            versions = hist.setdefault(name, [])
            versions.append((v, ts, source))
            if len(versions) > HISTORY_MAX:
                del versions[0]

    def history_out(self, obj, names):
        """propertiesWithHistory: each named property's versions, newest
        first; a value nobody wrote (createdate, hs_object_id) as one."""
        hist = obj.get("history", {})
        out = {}
        for name in names:
            versions = hist.get(name)
            if versions is None:
                v = self.getprop(obj, name)
                versions = [] if v is None else \
                    [(v, obj["createdAt"], ("CALCULATED", None, None))]
            entries = []
            for v, ts, (stype, sid, user) in reversed(versions):
                e = {"value": v, "timestamp": ts, "sourceType": stype}
                if sid is not None:
                    e["sourceId"] = sid
                if user is not None:
                    e["updatedByUserId"] = user
                entries.append(e)
            out[name] = entries
        return out

    # -- the search index ----------------------------------------------------
    #
    # With search_index_delay_ms, search sees each object as it was that
    # long ago: obj["index"] keeps (time of a write, the object after it),
    # oldest first, pruned to the newest version search already sees.

    @staticmethod
    def _snap(obj):
        s = {k: obj[k] for k in ("id", "createdAt", "updatedAt", "archived")}
        s["properties"] = dict(obj["properties"])
        if "archivedAt" in obj:
            s["archivedAt"] = obj["archivedAt"]
        return s

    def _index_before(self, obj):
        if self.cfg.search_index_delay_ms and "index" not in obj:
            obj["index"] = [(0.0, self._snap(obj))]

    def _index_after(self, obj):
        delay = self.cfg.search_index_delay_ms / 1000.0
        if not delay:
            obj.pop("index", None)
            return
        now = time.time()
        versions = obj.setdefault("index", [])
        versions.append((now, self._snap(obj)))
        while len(versions) > 1 and versions[1][0] <= now - delay:
            del versions[0]

    def indexed(self, obj, now):
        """The object as search sees it at now, or None if not yet."""
        versions = obj.get("index")
        if not versions:
            return obj
        seen = None
        for written, snap in versions:
            if written > now - self.cfg.search_index_delay_ms / 1000.0:
                break
            seen = snap
        return seen

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

    def create(self, t, props, ts, source=API_SOURCE):
        oid = self.new_id()
        obj = {"id": oid, "properties": {}, "createdAt": ts, "updatedAt": ts,
               "archived": False}
        if self.cfg.search_index_delay_ms:
            obj["index"] = []   # not in the index before it was made
        if t == "line_items" and props.get("hs_product_id"):
            pr = self.objects["products"][props["hs_product_id"]]
            for k in ("name", "price", "hs_sku", "description"):
                if k not in props and k in pr["properties"]:
                    props[k] = pr["properties"][k]
        if t == "deals" and "pipeline" not in props and \
                props.get("dealstage"):
            props["pipeline"] = "default"
        if t == "orders" and "hs_pipeline" not in props and \
                props.get("hs_pipeline_stage"):
            props["hs_pipeline"] = ORDER_PIPELINE_ID
        self.objects[t][oid] = obj
        self.apply(t, obj, props, ts, source)
        return obj

    def archive(self, t, obj, ts):
        if obj["archived"]:
            return
        self._index_before(obj)
        obj["archived"] = True
        obj["archivedAt"] = ts
        obj["updatedAt"] = ts
        self._index_after(obj)
        if self.cfg.unique_reuse_after_archive:
            self._release_unique(t, obj)
        # (otherwise the archived object keeps its unique values)

    def getprop(self, obj, name):
        if name == "hs_object_id":
            return obj["id"]
        if name == "hs_lastmodifieddate" or name == "lastmodifieddate":
            return obj["updatedAt"]
        if name == "createdate":
            return obj["properties"].get("createdate") or obj["createdAt"]
        return obj["properties"].get(name)

    def out(self, t, obj, props=None, echo=None, history=None):
        if props is None and echo is None:
            props = DEFAULT_READ_PROPS.get(
                t, ["createdate", "hs_lastmodifieddate", "hs_object_id"])
        if props is not None:
            # HubSpot's properties are strings; a requested one that is
            # unset is left out, or (null_properties) answered as null, as
            # HubSpot's schema allows ("string | null")
            pd = {k: v for k, v in ((k, self.getprop(obj, k)) for k in props)
                  if v is not None or self.cfg.null_properties}
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
        if history:
            r["propertiesWithHistory"] = self.history_out(obj, history)
        return r

    def order(self, results):
        if self.cfg.shuffle_results and len(results) > 1:
            orig = list(results)
            self.rng.shuffle(results)
            if results == orig:
                results.reverse()
        return results

    # -- deletions and merges -----------------------------------------------

    def _release_unique(self, t, obj):
        for name, idx in self.uniq[t].items():
            v = obj["properties"].get(name)
            if v not in (None, ""):
                k = self._norm(t, name, v)
                if idx.get(k) == obj["id"]:
                    del idx[k]

    def _links_of(self, t, oid):
        """Every association touching (t, oid): (tt, tid, (cat, typeId))."""
        out = []
        for (a, ai, b), m in self.assoc.items():
            if a == t and ai == oid:
                out.extend((b, bi, pair) for bi, pairs in m.items()
                           for pair in pairs)
        return out

    def _drop_links(self, t, oid):
        for (a, ai, b), m in list(self.assoc.items()):
            if a == t and ai == oid:
                for bi in list(m):
                    self.unlink(t, oid, b, bi)
            elif b == t and oid in m:
                self.unlink(a, ai, t, oid)

    def purge(self, t, obj):
        """Gone for good (a GDPR delete): no archive, no unique values,
        no associations left."""
        self._release_unique(t, obj)
        self._drop_links(t, obj["id"])
        del self.objects[t][obj["id"]]

    def merge(self, t, keep, gone, ts, source):
        """Merge gone into keep as HubSpot does: the primary's values win,
        the other's fill the gaps; associations of both move over; the ids
        that disappear point to the result (see follow())."""
        props = dict(gone["properties"])
        props.update(keep["properties"])
        earlier = [x for o in (keep, gone) for x in
                   o["properties"].get("hs_merged_object_ids", "").split(";")
                   if x]
        hist = dict(gone.get("history", {}))
        hist.update(keep.get("history", {}))
        links = [x for o in (keep, gone) for x in self._links_of(t, o["id"])
                 if not (x[0] == t and x[1] in (keep["id"], gone["id"]))]
        for o in (keep, gone):
            self._release_unique(t, o)
            self._drop_links(t, o["id"])
        del self.objects[t][gone["id"]]
        vanished = [gone["id"]]
        if self.cfg.merge_new_id:
            del self.objects[t][keep["id"]]
            vanished.insert(0, keep["id"])
            obj = {"id": self.new_id(), "createdAt": keep["createdAt"],
                   "archived": False}
            if self.cfg.search_index_delay_ms:
                obj["index"] = []
            self.objects[t][obj["id"]] = obj
        else:
            obj = keep
            self._index_before(obj)
        for oid in vanished:
            self.merged[(t, oid)] = obj["id"]
        props["hs_merged_object_ids"] = ";".join(earlier + vanished)
        hist.setdefault("hs_merged_object_ids", []).append(
            (props["hs_merged_object_ids"], ts, source))
        obj["properties"] = props
        obj["history"] = hist
        obj["updatedAt"] = ts
        for name, idx in self.uniq[t].items():
            v = props.get(name)
            if v not in (None, ""):
                idx[self._norm(t, name, v)] = obj["id"]
        for tt, tid, (cat, typ) in links:
            self.link(t, obj["id"], tt, tid, cat, typ)
        self._index_after(obj)
        return obj

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

"""
control.py - the control API of the mock, under /_mock/.

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
       search_index_delay_ms (search sees every object as it was this
                   long ago: one created since is not found yet, one edited
                   since is found by its old values, one archived since
                   is still found; default 0),
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
       order_pipeline_limit (order pipelines the portal may have, enforced
                   on creation only: whether GET /crm/v3/limits/pipelines
                   lists orders is not documented; default 100),
       order_type_name null | "orders" | "order" | "0-123" (how API paths
                   must name native orders; null, the default, takes any;
                   another spelling answers 400 "Unable to infer object
                   type"),
       granular_scopes (bool: the token has crm.objects.products.* and
                   crm.objects.line_items.* instead of the legacy e-commerce)
       merge_new_id (bool, default true: a merge makes a new record with a
                   new id and both old ids point to it, as HubSpot's
                   changelog announces for contacts and companies; false:
                   the primary keeps its id, the older behaviour),
       merged_ids "follow" | "404" (what reading a merged-away id answers:
                   "follow", the default, answers the merged record under
                   its own id, as HubSpot documents, for GET, batch read,
                   update and gdpr-delete by id; "404": as an unknown id),
       gdpr_blocks_email (bool, default false: a GDPR-deleted contact's
                   e-mail may be used again; true: it is blocklisted like
                   an unknown e-mail given to gdpr-delete, which always is)
       contacts_hs_lastmodifieddate (bool, default false: searching
                   contacts by hs_lastmodifieddate, filter or sort, sees no
                   value, as integrators report of HubSpot, where contacts
                   keep it in lastmodifieddate; true: both work)
       error_context_ids (bool, default true: each error of a 207, and a
                   batch refused whole, names its inputs in context.ids;
                   false: its context only says what it is about, e.g.
                   {"propertyName": [...]}, as HubSpot does not document
                   that it names the input)
       null_properties (bool, default false: a requested property that
                   is unset is left out of answers; true: it is answered
                   as null, as HubSpot's schema allows, "string | null")
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

Edits by hand, as a salesperson makes them in HubSpot's screens: each
changed value gets a version in the property's history (read back with
propertiesWithHistory) with sourceType CRM_UI, sourceId "userId:N" and
updatedByUserId N (N: the body's "userId", or the first owner's), and
hs_lastmodifieddate moves to the time of the change ("timestamp", epoch
milliseconds or ISO 8601, when given: to spread many changes over time).
API calls are recorded as sourceType INTEGRATION, sourceId the app id.
  POST /_mock/objects/{type}      {"properties": {...}, "associations":
                                  [{"toType", "toId", "typeId"?,
                                  "category"?}], "userId"?, "timestamp"?}
                                  creates an
                                  object (no validation; the default
                                  association type unless typeId), 201
                                  with the object; {"inputs": [...]} many,
                                  201 {"results"}
  PATCH /_mock/objects/{type}/{id}  {"properties": {...}, "userId"?,
                                  "timestamp"?} edits
                                  it, validated as HubSpot validates (400,
                                  409 for a unique value held elsewhere,
                                  404 for an archived or unknown id); 200
                                  with the object.  PATCH
                                  /_mock/objects/{type} {"inputs": [{"id",
                                  "properties"}]}: many, 200 {"results"}
  DELETE /_mock/objects/{type}/{id}  archive it, as deleting in HubSpot
                                  does; ?permanent=true: gone for good (no
                                  archive, unique values and associations
                                  released), as after a GDPR delete
  POST /_mock/merge/{type}        {"primaryObjectId", "objectIdToMerge"}
                                  (HubSpot's merge body) merges them: the
                                  primary's values win, the other's fill
                                  gaps, associations of both move to the
                                  result, hs_merged_object_ids lists the
                                  ids that disappeared (see merge_new_id,
                                  merged_ids); 200 with the merged object
  GET  /_mock/merged              {"results": [{type, id, mergedInto}]}
  DELETE /_mock/associations/{fromType}/{fromId}/{toType}/{toId}
                                  removes every association between the
                                  two, both directions (404 if none)

Inspection:
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
"""

import json
import time
from urllib.parse import unquote

from . import byhand
from .errors import ApiError
from .model import jdump
from .state import LOCK


class ControlApi:
    """The /_mock/ paths, mixed into handler.Handler."""

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
                return byhand.create(st, t, body)
            if method == "PATCH":
                return byhand.edit(st, t, None, body)
            return 200, {"results": [
                {"id": o["id"], "properties": o["properties"],
                 "archived": o["archived"], "createdAt": o["createdAt"],
                 "updatedAt": o["updatedAt"]}
                for o in st.objects[t].values()]}
        if len(parts) == 3 and parts[0] == "objects":
            t = st.resolve_type(parts[1])
            if method == "DELETE":
                return byhand.delete(
                    st, t, parts[2],
                    q.get("permanent", ["false"])[0] == "true")
            if method == "PATCH":
                return byhand.edit(st, t, parts[2], body)
        if len(parts) == 2 and parts[0] == "merge" and method == "POST":
            return byhand.merge(st, st.resolve_type(parts[1]), body)
        if len(parts) == 5 and parts[0] == "associations" and \
                method == "DELETE":
            return byhand.unlink(st, st.resolve_type(parts[1]), parts[2],
                                 st.resolve_type(parts[3]), parts[4])
        if parts == ["merged"]:
            return 200, {"results": [
                {"type": t, "id": oid, "mergedInto": new}
                for (t, oid), new in st.merged.items()]}
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

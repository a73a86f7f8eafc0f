"""
objects.py - /crm/v3/objects/{type}: batch upsert, create, update, archive
and read; single-object create, read, update and archive; listing.
"""

from urllib.parse import unquote

from ..errors import ApiError, InputError, bad_json, batch_failed, \
    check_keys, perr, prop_errors_input
from ..model import BATCH_READ_HISTORY_LIMIT, SINGULAR, now_iso
from .batch import BatchRoutes


class ObjectRoutes(BatchRoutes):

    def route_objects(self, method, p, q, body):
        """/crm/v3/objects/{type}/..."""
        n = len(p)
        t = self.st.resolve_type(p[3])
        if n == 4:
            if method == "GET":
                return self.list_objects(t, q)
            if method == "POST":
                return self.create_one(t, body)
        elif n == 5 and p[4] == "search" and method == "POST":
            return self.search(t, body)
        elif n == 5 and p[4] == "gdpr-delete" and method == "POST":
            return self.gdpr_delete(t, body)
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
        return None

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
                    raise batch_failed([e], st.cfg.error_context_ids)
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

    def _props_param(self, q, name="properties"):
        if name not in q:
            return None
        out = []
        for v in q[name]:
            out.extend(x for x in v.split(",") if x)
        return out

    def batch_read(self, t, body, q):
        st = self.st
        inputs = self.inputs_of(
            body, {"inputs", "properties", "propertiesWithHistory",
                   "idProperty"}, "BatchReadInputSimplePublicObjectId")
        props = body.get("properties")
        hist = body.get("propertiesWithHistory")
        for names in (props, hist):
            if names is not None and (not isinstance(names, list) or not all(
                    isinstance(x, str) for x in names)):
                raise bad_json("properties must be an array of strings")
        if hist and len(inputs) > BATCH_READ_HISTORY_LIMIT:
            raise ApiError(400, "VALIDATION_ERROR",
                           "The maximum number of inputs supported in a batch "
                           "request for property histories is %d. Please "
                           "reduce the number of items and try again"
                           % BATCH_READ_HISTORY_LIMIT)
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
                results.append(st.out(t, o, props or None,
                                      history=hist or None))
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
        return 200, self.st.out(t, o, self._props_param(q),
                                history=self._props_param(
                                    q, "propertiesWithHistory"))

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
        hist = self._props_param(q, "propertiesWithHistory")
        body = {"results": [st.out(t, o, self._props_param(q), history=hist)
                            for o in page]}
        if len(objs) > limit:
            body["paging"] = {"next": {"after": page[-1]["id"]}}
        return 200, body

    def gdpr_delete(self, t, body):
        """Permanently delete a contact (HubSpot's GDPR delete): by id, or
        by a unique property named in idProperty.  An e-mail that matches
        no contact is blocklisted: no contact can be created with it."""
        st = self.st
        if t != "contacts":
            raise ApiError(400, "VALIDATION_ERROR",
                           "GDPR deletion is only available for contacts")
        check_keys(body, {"objectId", "idProperty"}, "PublicGdprDeleteInput")
        if body.get("objectId") in (None, ""):
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [objectId]")
        oid = st.coerce(body["objectId"])
        idp = body.get("idProperty") or "hs_object_id"
        if idp != "hs_object_id" and idp not in st.uniq[t]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Unable to perform delete by non-unique %s "
                           "property: %s" % (SINGULAR[t], idp))
        o = st.find_by(t, idp, oid)
        if o is None and idp == "hs_object_id":
            o = st.objects[t].get(oid)          # archived ones too
        if o is None:
            if idp == "email":
                st.blocked_emails.add(oid.lower())
                return 204, None
            raise ApiError(404, "OBJECT_NOT_FOUND",
                           "Object not found.  objectId are usually numeric.",
                           context={"id": [oid]})
        st.purge(t, o)
        if st.cfg.gdpr_blocks_email and o["properties"].get("email"):
            st.blocked_emails.add(o["properties"]["email"].lower())
        return 204, None

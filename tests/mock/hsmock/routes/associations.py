"""
associations.py - v4 associations: /crm/v4/associations/{from}/{to}/batch/
(associate/default, create, archive, read), labels, and
/crm/v4/objects/{type}/{id}/associations/... (list, put, delete).
"""

import json

from ..errors import ApiError, InputError, bad_json, batch_failed, \
    check_keys
from ..model import TYPE_IDS, int_id, now_iso
from .batch import BatchRoutes


class AssociationRoutes(BatchRoutes):

    def route_associations(self, method, p, q, body):
        """/crm/v4/associations/{from}/{to}/..."""
        n = len(p)
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
        return None

    def route_object_associations(self, method, p, q, body):
        """/crm/v4/objects/{type}/{id}/associations/..."""
        n = len(p)
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
        return None

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

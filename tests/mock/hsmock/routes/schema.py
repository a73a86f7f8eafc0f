"""
schema.py - /crm/v3/properties/{type} (properties and groups),
/crm/v3/pipelines/deals and /crm/v3/pipelines/orders, and
/crm/v3/limits/pipelines.
"""

import math
import uuid

from ..errors import ApiError, bad_json, check_keys
from ..model import FIELD_TYPES, PROPNAME_RE, now_iso


class SchemaRoutes:

    def route_properties(self, method, p, q, body):
        """/crm/v3/properties/{type}/..."""
        n = len(p)
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
        return None

    def route_pipelines(self, method, p, q, body):
        """/crm/v3/pipelines/{type}/..."""
        n = len(p)
        t = self.st.resolve_type(p[3])
        if t not in ("deals", "orders"):
            raise ApiError(400, "VALIDATION_ERROR",
                           "The mock only knows deal and order pipelines")
        pipelines = self.st.pipelines if t == "deals" \
            else self.st.order_pipelines
        if n == 4 and method == "GET":
            return 200, {"results": list(pipelines.values())}
        if n == 4 and method == "POST":
            return self.pipeline_create(t, body)
        if n in (5, 6):
            pl = pipelines.get(p[4])
            if pl is None:
                raise ApiError(404, "OBJECT_NOT_FOUND",
                               "Unable to find pipeline %s" % p[4])
            if n == 5 and method == "GET":
                return 200, pl
            if n == 6 and p[5] == "stages" and method == "GET":
                return 200, {"results": pl["stages"]}
        return None

    def pipeline_limits(self):
        """GET /crm/v3/limits/pipelines"""
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

    def generated_id(self):
        """A generated id as HubSpot gives order pipelines and stages."""
        return str(uuid.UUID(int=self.st.rng.getrandbits(128), version=4))

    def pipeline_create(self, t, body):
        """A deal pipeline (stages need metadata.probability) or an order
        pipeline (metadata optional, as for every object but deals; HubSpot
        gives order pipelines and stages generated ids)."""
        st = self.st
        deals = t == "deals"
        pipelines = st.pipelines if deals else st.order_pipelines
        limit = st.cfg.deal_pipeline_limit if deals \
            else st.cfg.order_pipeline_limit
        check_keys(body, {"label", "displayOrder", "stages", "pipelineId"},
                   "PipelineInput")
        if not body.get("label") or "displayOrder" not in body or \
                not isinstance(body.get("stages"), list) or \
                not body["stages"]:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Invalid input JSON on line 1, column 2: Some "
                           "required fields were not set: [label, "
                           "displayOrder, stages]")
        if len(pipelines) >= limit:
            raise ApiError(400, "VALIDATION_ERROR",
                           "This portal has reached its limit of %d %s "
                           "pipelines" % (limit, "deal" if deals else "order"),
                           sub="PipelineError.PIPELINE_LIMIT_REACHED")
        if any(p["label"] == body["label"] for p in pipelines.values()):
            raise ApiError(409, "CONFLICT",
                           "A pipeline with label %s already exists"
                           % body["label"])
        stages = []
        labels = set()
        for s in body["stages"]:
            check_keys(s, {"label", "displayOrder", "metadata", "stageId"},
                       "PipelineStageInput")
            if not s.get("label") or "displayOrder" not in s or \
                    not isinstance(s.get("metadata", {}), dict) or \
                    (deals and "metadata" not in s):
                raise ApiError(400, "VALIDATION_ERROR",
                               "Every stage needs label, displayOrder and "
                               "metadata" if deals else
                               "Every stage needs label and displayOrder")
            if s["label"] in labels:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Duplicate stage label '%s'" % s["label"])
            labels.add(s["label"])
            md = {str(k): str(v) for k, v in s.get("metadata", {}).items()}
            if not deals:
                stages.append({"id": self.generated_id(), "label": s["label"],
                               "displayOrder": s["displayOrder"],
                               "metadata": md})
                continue
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
        if deals:
            pid = str(st.next_pipe_id)
            st.next_pipe_id += 1
        else:
            pid = self.generated_id()
        pl = st._pipeline(pid, body["label"], body["displayOrder"], stages,
                          now_iso())
        pipelines[pid] = pl
        return 201, pl

"""
routes - the HubSpot API the mock serves, one module per family.

Api joins the families and routes a call's path to them; each family's
route_* method answers (status, body), raises errors.ApiError, or returns
None when it has no such route (the call is then answered with 404).
"""

from ..errors import ApiError
from ..model import DATEVER_RE
from .account import AccountRoutes
from .associations import AssociationRoutes
from .objects import ObjectRoutes
from .schema import SchemaRoutes
from .search import SearchRoutes


class Api(ObjectRoutes, SearchRoutes, AssociationRoutes, SchemaRoutes,
          AccountRoutes):
    """Routes and executes API calls.  Called with LOCK held."""

    def __init__(self, st):
        self.st = st

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

    ORDER_SPELLINGS = ("orders", "order", "0-123")

    def check_order_spelling(self, parts):
        """With order_type_name set, a path that names native orders any
        other way is refused as HubSpot refuses an unknown type."""
        want = self.st.cfg.order_type_name
        if want is None or parts[:1] != ["crm"]:
            return
        for x in parts[3:]:
            if x.lower() in self.ORDER_SPELLINGS and x != want:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Unable to infer object type from: %s" % x)

    def route(self, method, parts, q, body):
        self.check_order_spelling(parts)
        p = parts
        n = len(p)
        # the current association label path (schema v4, or date-versioned)
        # is the old /crm/v4/associations/{from}/{to}/labels
        if n >= 6 and p[:2] == ["crm", "associations"] and \
                p[5] == "labels" and (p[2] == "v4" or DATEVER_RE.match(p[2])):
            p = ["crm", "v4", "associations", p[3], p[4]] + p[5:]
            n = len(p)
        answer = None
        if n >= 4 and p[:3] == ["crm", "v3", "objects"]:
            answer = self.route_objects(method, p, q, body)
        elif n >= 5 and p[:3] == ["crm", "v4", "associations"]:
            answer = self.route_associations(method, p, q, body)
        elif n >= 6 and p[:3] == ["crm", "v4", "objects"] and \
                p[5] == "associations":
            answer = self.route_object_associations(method, p, q, body)
        elif n >= 4 and p[:3] == ["crm", "v3", "properties"]:
            answer = self.route_properties(method, p, q, body)
        elif n >= 4 and p[:3] == ["crm", "v3", "pipelines"]:
            answer = self.route_pipelines(method, p, q, body)
        elif p == ["crm", "v3", "limits", "pipelines"] and method == "GET":
            answer = self.pipeline_limits()
        elif p[:3] == ["crm", "v3", "owners"]:
            answer = self.route_owners(method, p, q, body)
        elif p == ["account-info", "v3", "details"] and method == "GET":
            answer = self.account_details()
        elif p == ["account-info", "v3", "api-usage", "daily",
                   "private-apps"] and method == "GET":
            answer = self.api_usage()
        if answer is None:
            raise ApiError(404, "OBJECT_NOT_FOUND",
                           "No route for %s /%s (hubspot mock)"
                           % (method, "/".join(parts)))
        return answer

"""
errors.py - HubSpot's error answers.

ApiError fails a whole call with HubSpot's error body; InputError fails
one input of a batch and becomes an entry of a 207's errors[].
"""

import json


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

    def unnamed_context(self):
        """The context without the inputs: what the first detail is about
        (a property), as when HubSpot's error names no input."""
        for d in self.errors:
            if isinstance(d, dict) and d.get("context"):
                return dict(d["context"])
        return {}

    def entry(self, named=True):
        # every field HubSpot's StandardError schema requires
        e = {"status": "error", "category": self.category,
             "message": self.message,
             "context": self.context if named else self.unnamed_context(),
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


def batch_failed(errs, named=True):
    """All inputs failed: the first failure's status and body (named
    False: its context names no input, see error_context_ids)."""
    e0 = errs[0]
    sub = []
    for e in errs:
        d = {"message": e.message, "code": e.category,
             "context": e.context if named else e.unnamed_context()}
        if e.sub:
            d["subCategory"] = e.sub
        sub.append(d)
    return ApiError(e0.status, e0.category, e0.message, errors=sub,
                    context=e0.context if named else e0.unnamed_context(),
                    sub=e0.sub)


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

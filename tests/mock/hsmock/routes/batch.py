"""
batch.py - batch inputs and batch answers, shared by the API families.
"""

from ..errors import ApiError, bad_json, batch_failed, check_keys, perr, \
    prop_errors_input
from ..model import BATCH_LIMIT, now_iso


class BatchRoutes:
    """Parsing of {"inputs": [...]} and the 200/207 answers."""

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
        named = st.cfg.error_context_ids
        if errs and not results:
            raise batch_failed(errs, named)
        body = {"status": "COMPLETE", "results": st.order(results),
                "startedAt": t0, "completedAt": now_iso()}
        if errs:
            body["numErrors"] = len(errs)
            body["errors"] = [e.entry(named) for e in errs]
            return 207, body
        return ok_status, body

    def rejected(self, v, ctx, name):
        rej = self.st.faults.get("reject_ids")
        if rej and str(v) in rej:
            raise prop_errors_input(ctx, [perr(
                name, "INVALID_OPTION",
                "Value %s was rejected (mock reject_ids)" % v)])

#!/usr/bin/python3
"""
test_mock.py - fast self-test of the HubSpot mock (stdlib unittest).

Starts the mock on a free port as a subprocess and checks the behaviour the
erpcrm tests rely on.  Run: python3 tests/mock/test_mock.py
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "hubspot_mock.py")
TOKEN = "test-token"


def start_mock(tmp, *extra):
    pf = os.path.join(tmp, "port-%d" % len(os.listdir(tmp)))
    proc = subprocess.Popen(
        [sys.executable, MOCK, "--port", "0", "--port-file", pf,
         "--seed", "7"] + list(extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while not os.path.exists(pf):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("mock did not start: %s"
                               % proc.stderr.read().decode())
        time.sleep(0.02)
    with open(pf) as f:
        port = int(f.read())
    line = proc.stdout.readline().decode()
    if line.strip() != "listening on %d" % port:
        raise RuntimeError("unexpected stdout: %r" % line)
    return proc, port


class MockTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hsmock")
        cls.proc, cls.port = start_mock(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(5)
        cls.proc.stdout.close()
        cls.proc.stderr.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=10)
        self.ctl("POST", "/_mock/reset", {
            "unique_properties": {"companies": ["erp_id"],
                                  "deals": ["erp_id"],
                                  "contacts": ["erp_id"]},
            "properties": {"companies": [{"name": "nip"}]}})

    def tearDown(self):
        self.conn.close()

    # -- helpers -------------------------------------------------------------

    def raw(self, method, path, body=None, token=TOKEN, conn=None):
        conn = conn or self.conn
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r, r.read()

    def call(self, method, path, body=None, token=TOKEN):
        r, data = self.raw(method, path, body, token)
        return r.status, (json.loads(data) if data else None), r

    def ctl(self, method, path, body=None):
        st, out, _ = self.call(method, path, body, token=None)
        self.assertLess(st, 300, out)
        return out

    def upsert(self, t, rows, idp="erp_id"):
        return self.call("POST", "/crm/v3/objects/%s/batch/upsert" % t, {
            "inputs": [{"idProperty": idp, "id": k, "properties": p}
                       for k, p in rows]})

    def assert_error_shape(self, out, category):
        for k in ("status", "message", "correlationId", "category"):
            self.assertIn(k, out)
        self.assertEqual(out["status"], "error")
        self.assertEqual(out["category"], category)

    # -- objects -------------------------------------------------------------

    def test_upsert_create_update_new_and_order(self):
        rows = [("K-%d" % i, {"name": "Firma %d" % i}) for i in range(6)]
        st, out, r = self.upsert("companies", rows)
        self.assertEqual(st, 200, out)
        self.assertEqual(out["status"], "COMPLETE")
        self.assertTrue(r.getheader("X-HubSpot-Correlation-Id"))
        got = [x["properties"]["erp_id"] for x in out["results"]]
        self.assertEqual(sorted(got), [k for k, _ in rows])
        self.assertNotEqual(got, [k for k, _ in rows], "order must differ")
        self.assertTrue(all(x["new"] for x in out["results"]))
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        for x in out["results"]:
            self.assertTrue(x["id"].isdigit())
            self.assertEqual(x["properties"]["name"],
                             "Firma %s" % x["properties"]["erp_id"][2:])
        st, out, _ = self.upsert("companies", [("K-1", {"name": "Nowa"}),
                                               ("K-9", {"name": "Dziewiec"})])
        self.assertEqual(st, 200, out)
        by = {x["properties"]["erp_id"]: x for x in out["results"]}
        self.assertFalse(by["K-1"]["new"])
        self.assertEqual(by["K-1"]["id"], ids["K-1"])
        self.assertEqual(by["K-1"]["properties"]["name"], "Nowa")
        self.assertTrue(by["K-9"]["new"])
        objs = self.ctl("GET", "/_mock/objects/companies")["results"]
        self.assertEqual(len(objs), 7)
        st, one, _ = self.call("GET", "/crm/v3/objects/companies/%s?"
                               "properties=name,erp_id" % ids["K-1"])
        self.assertEqual(st, 200)
        self.assertEqual(one["properties"], {"name": "Nowa", "erp_id": "K-1"})

    def test_207_reject_ids_and_validation(self):
        self.ctl("POST", "/_mock/faults", {"reject_ids": ["K-2"]})
        st, out, _ = self.upsert("companies", [
            ("K-1", {"name": "a"}), ("K-2", {"name": "b"}),
            ("K-3", {"numberofemployees": "dużo"}), ("K-4", {"name": "d"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["numErrors"], 2)
        failed = sorted(e["context"]["ids"][0] for e in out["errors"])
        self.assertEqual(failed, ["K-2", "K-3"])
        for e in out["errors"]:
            self.assertEqual(e["status"], "error")
            self.assertEqual(e["category"], "VALIDATION_ERROR")
        self.assertEqual(sorted(x["properties"]["erp_id"]
                                for x in out["results"]), ["K-1", "K-4"])
        self.assertEqual(len(self.ctl("GET", "/_mock/objects/companies")
                             ["results"]), 2)

    def test_value_length_limit(self):
        # HubSpot takes at most 65,536 characters (UTF-16 code units)
        ok = "x" * 65536
        emoji = "\U0001F600" * 32769          # 65,538 UTF-16 units
        st, out, _ = self.upsert("companies", [
            ("K-1", {"name": ok}), ("K-2", {"name": ok + "y"}),
            ("K-3", {"name": emoji})])
        self.assertEqual(st, 207, out)
        failed = sorted(e["context"]["ids"][0] for e in out["errors"])
        self.assertEqual(failed, ["K-2", "K-3"])
        self.assertIn("INVALID_PROPERTY_VALUE_LENGTH", out["errors"][0]["message"])
        self.assertEqual([x["properties"]["erp_id"] for x in out["results"]],
                         ["K-1"])

    def test_error_context_without_ids(self):
        # error_context_ids false: a 207's errors say which property, not
        # which input (HubSpot does not document that they name the input)
        self.ctl("POST", "/_mock/config", {"error_context_ids": False})
        st, out, _ = self.upsert("companies", [
            ("K-1", {"name": "a"}), ("K-2", {"numberofemployees": "many"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"],
                         {"propertyName": ["numberofemployees"]})
        self.assertEqual(out["errors"][0]["links"], {})
        st, out, _ = self.upsert("companies", [("K-2", {"foo": "x"})])
        self.assertEqual(st, 400, out)
        self.assertEqual(out["context"], {"propertyName": ["foo"]})
        self.assertNotIn("ids", json.dumps(out))

    def test_null_properties(self):
        self.upsert("companies", [("K-1", {"name": "a"})])
        path = "/crm/v3/objects/companies/batch/read"
        body = {"idProperty": "erp_id", "inputs": [{"id": "K-1"}],
                "properties": ["name", "domain"], "propertiesWithHistory": []}
        st, out, _ = self.call("POST", path, body)
        self.assertEqual(st, 200, out)
        self.assertNotIn("domain", out["results"][0]["properties"])
        # as HubSpot's schema allows: a requested unset property is null
        self.ctl("POST", "/_mock/config", {"null_properties": True})
        st, out, _ = self.call("POST", path, body)
        self.assertIsNone(out["results"][0]["properties"]["domain"])
        self.assertEqual(out["results"][0]["properties"]["name"], "a")
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               {"properties": ["domain"]})
        self.assertIsNone(out["results"][0]["properties"]["domain"])

    def test_search_one_sort(self):
        path = "/crm/v3/objects/companies/search"
        self.ctl("POST", "/_mock/config", {"search_per_second": 0})
        self.upsert("companies", [("K-%d" % i, {"name": "n%d" % i})
                                  for i in range(3)])
        for sorts, want in ((["name"], 200), (["-name"], 200),
                            ([{"propertyName": "name",
                               "direction": "DESCENDING"}], 200),
                            (["name", "hs_object_id"], 400),
                            ([{"propertyName": "name",
                               "direction": "DOWN"}], 400),
                            ([{"property": "name"}], 400)):
            st, out, _ = self.call("POST", path, {"sorts": sorts,
                                                  "properties": ["name"]})
            self.assertEqual(st, want, (sorts, out))
            if st == 200 and sorts != ["name"]:
                self.assertEqual(out["results"][0]["properties"]["name"],
                                 "n2")

    def test_fail_ids(self):
        self.ctl("POST", "/_mock/faults", {"fail_ids": {"ids": ["K-2"]}})
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b"})])
        self.assertEqual(st, 500, out)
        self.assert_error_shape(out, "INTERNAL_ERROR")
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        self.assertEqual(st, 200, out)

    def test_unknown_property_all_fail_400(self):
        st, out, _ = self.upsert("companies", [("K-1", {"foo": "x"})])
        self.assertEqual(st, 400, out)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertIn('Property \\"foo\\" does not exist', out["message"])
        self.assertIn("PROPERTY_DOESNT_EXIST", out["message"])
        self.assertEqual(out["errors"][0]["context"], {"ids": ["K-1"]})

    def test_batch_limits_and_shape(self):
        rows = [("K-%d" % i, {"name": "x"}) for i in range(101)]
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 400)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertIn("100", out["message"])
        st, out, _ = self.upsert("companies", rows[:100])
        self.assertEqual(st, 200)
        st, out, _ = self.upsert("companies", [("name", {})], idp="name")
        self.assertEqual(st, 400)
        self.assertIn("non-unique", out["message"])
        st, out, _ = self.upsert("companies", [("A", {}), ("A", {})])
        self.assertEqual(st, 400)
        self.assertIn("Duplicate IDs", out["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "upsert", {"inputs": [{"id": "A",
                                                      "idProperty": "erp_id",
                                                      "propertiez": {}}]})
        self.assertEqual(st, 400)
        self.assertIn("propertiez", out["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "upsert", {})
        self.assertEqual(st, 400)
        st, out, _ = self.upsert("companies", [("K-1", {"name": {"a": 1}})])
        self.assertEqual(st, 400)
        self.assertEqual(len(self.ctl("GET", "/_mock/objects/companies")
                             ["results"]), 100)

    def test_archive_and_unique_release(self):
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        oid = out["results"][0]["id"]
        st, out, r = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "archive", {"inputs": [{"id": oid},
                                                      {"id": "999999"}]})
        self.assertEqual(st, 204)
        self.assertIsNone(out)
        self.assertEqual(r.getheader("Content-Length"), None)
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/" + oid)
        self.assertEqual(st, 404)
        self.assert_error_shape(out, "OBJECT_NOT_FOUND")
        st, out, _ = self.upsert("companies", [("K-1", {"name": "b"})])
        self.assertTrue(out["results"][0]["new"])
        self.assertNotEqual(out["results"][0]["id"], oid)
        objs = {o["id"]: o for o in
                self.ctl("GET", "/_mock/objects/companies")["results"]}
        self.assertTrue(objs[oid]["archived"])
        self.assertEqual(objs[oid]["properties"]["name"], "a")

    def test_update_create_conflict_and_search(self):
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "update", {"inputs": [
                                   {"id": ids["K-1"],
                                    "properties": {"erp_id": "K-2"}},
                                   {"id": "424242", "properties": {}},
                                   {"id": ids["K-2"],
                                    "properties": {"city": "Kraków"}}]})
        self.assertEqual(st, 207, out)
        cats = sorted(e["category"] for e in out["errors"])
        self.assertEqual(cats, ["CONFLICT", "OBJECT_NOT_FOUND"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "update", {"inputs": [
                                   {"id": "424242", "properties": {}}]})
        self.assertEqual(st, 404)
        # create: one bad input without objectWriteTraceId fails the batch
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "ok"}},
                                   {"properties": {"bad": "x"}}]})
        self.assertEqual(st, 400)
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "ok"},
                                    "objectWriteTraceId": "t1"},
                                   {"properties": {"bad": "x"},
                                    "objectWriteTraceId": "t2"}]})
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"],
                         {"objectWriteTraceId": ["t2"]})
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search", {
            "filterGroups": [{"filters": [{"propertyName": "erp_id",
                                           "operator": "EQ",
                                           "value": "K-2"}]}],
            "properties": ["city"], "limit": 10})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["total"], 1)
        self.assertEqual(out["results"][0]["properties"]["city"], "Kraków")
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               {"limit": 201})
        self.assertEqual(st, 400)

    def test_deal_pipeline_and_line_item_rules(self):
        st, pl, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Faktury", "displayOrder": 5, "stages": [
                {"label": "Wystawiona", "displayOrder": 0,
                 "metadata": {"probability": "0.5"}},
                {"label": "Zapłacona", "displayOrder": 1,
                 "metadata": {"probability": "1.0"}}]})
        self.assertEqual(st, 201, pl)
        stage = pl["stages"][1]["id"]
        st, out, _ = self.call("GET", "/crm/v3/pipelines/deals/" + pl["id"])
        self.assertEqual(out["label"], "Faktury")
        st, out, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Zla", "displayOrder": 6, "stages": [
                {"label": "X", "displayOrder": 0,
                 "metadata": {"probability": "1.5"}}]})
        self.assertEqual(st, 400)
        st, out, _ = self.upsert("deals", [
            ("F-1", {"dealname": "FV 1", "pipeline": pl["id"],
                     "dealstage": stage, "amount": "6000.00",
                     "closedate": "2026-03-01"}),
            ("F-2", {"dealname": "FV 2", "pipeline": pl["id"],
                     "dealstage": "closedwon"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"]["ids"], ["F-2"])
        self.assertIn("INVALID_OPTION", out["errors"][0]["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/line_items/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "x",
                                                   "price": "-1"}}]})
        self.assertEqual(st, 400)

    # -- edits by hand (the control API) -------------------------------------

    def one(self, t, oid, query=""):
        st, out, _ = self.call("GET", "/crm/v3/objects/%s/%s%s"
                               % (t, oid, query))
        return st, out

    def test_hand_edit_moves_lastmodified_and_history(self):
        _, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                              ("K-2", {"name": "b"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        _, before = self.one("companies", ids["K-1"],
                             "?properties=hs_lastmodifieddate")
        time.sleep(0.01)        # the next write falls in a later millisecond
        out = self.ctl("PATCH", "/_mock/objects/companies/" + ids["K-1"],
                       {"properties": {"name": "by hand"}, "userId": 9000002})
        self.assertEqual(out["properties"]["name"], "by hand")
        st, got = self.one("companies", ids["K-1"],
                           "?properties=name,hs_lastmodifieddate"
                           "&propertiesWithHistory=name")
        self.assertEqual(st, 200, got)
        self.assertGreater(got["properties"]["hs_lastmodifieddate"],
                           before["properties"]["hs_lastmodifieddate"])
        self.assertEqual(got["updatedAt"],
                         got["properties"]["hs_lastmodifieddate"])
        hist = got["propertiesWithHistory"]["name"]
        self.assertEqual([(h["value"], h["sourceType"], h.get("sourceId"),
                           h.get("updatedByUserId")) for h in hist],
                         [("by hand", "CRM_UI", "userId:9000002", 9000002),
                          ("a", "INTEGRATION", "2000001", None)])
        self.assertEqual(hist[0]["timestamp"],
                         got["properties"]["hs_lastmodifieddate"])
        # HubSpot's screens validate too: a bad number, a unique value
        # held by another record, an archived record
        st, out, _ = self.call("PATCH", "/_mock/objects/companies/" +
                               ids["K-1"], {"properties": {
                                   "numberofemployees": "many"}}, token=None)
        self.assertEqual(st, 400, out)
        st, out, _ = self.call("PATCH", "/_mock/objects/companies/" +
                               ids["K-1"], {"properties": {"erp_id": "K-2"}},
                               token=None)
        self.assertEqual(st, 409, out)
        # many at once
        out = self.ctl("PATCH", "/_mock/objects/companies", {"inputs": [
            {"id": ids["K-1"], "properties": {"city": "Gdańsk"}},
            {"id": ids["K-2"], "properties": {"city": "Łódź"}}]})
        self.assertEqual(sorted(r["properties"]["city"]
                                for r in out["results"]), ["Gdańsk", "Łódź"])
        # an API write of the same value is no new version
        self.call("POST", "/crm/v3/objects/companies/batch/update", {
            "inputs": [{"id": ids["K-1"], "properties": {"name": "by hand"}}]})
        _, got = self.one("companies", ids["K-1"],
                          "?propertiesWithHistory=name")
        self.assertEqual(len(got["propertiesWithHistory"]["name"]), 2)

    def test_hand_create_with_associations(self):
        _, out, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        cid = out["results"][0]["id"]
        deal = self.ctl("POST", "/_mock/objects/deals", {
            "properties": {"dealname": "Salesperson's deal",
                           "dealstage": "appointmentscheduled"},
            "associations": [{"toType": "companies", "toId": cid}]})
        self.assertTrue(deal["id"].isdigit())
        st, out, _ = self.call("GET", "/crm/v4/objects/deals/%s/associations/"
                               "companies" % deal["id"])
        self.assertEqual(st, 200, out)
        self.assertEqual([r["toObjectId"] for r in out["results"]], [cid])
        st, got = self.one("deals", deal["id"],
                           "?propertiesWithHistory=dealstage")
        self.assertEqual(got["propertiesWithHistory"]["dealstage"][0]
                         ["sourceType"], "CRM_UI")
        # the salesperson moves it to won
        self.ctl("PATCH", "/_mock/objects/deals/" + deal["id"],
                 {"properties": {"dealstage": "closedwon"}})
        st, out, _ = self.call("POST", "/crm/v3/objects/deals/search", {
            "filterGroups": [{"filters": [{"propertyName": "dealstage",
                                           "operator": "EQ",
                                           "value": "closedwon"}]}]})
        self.assertEqual([r["id"] for r in out["results"]], [deal["id"]])
        st, out, _ = self.call("POST", "/_mock/objects/deals", {
            "properties": {"dealname": "x"},
            "associations": [{"toType": "companies", "toId": "999999"}]},
            token=None)
        self.assertEqual(st, 404, out)
        # many at once, spread over time as a day's work would be
        out = self.ctl("POST", "/_mock/objects/companies", {"inputs": [
            {"properties": {"name": "Prospect %d" % i},
             "timestamp": 1764662400000 + i * 60000} for i in range(3)]})
        self.assertEqual([r["properties"]["hs_lastmodifieddate"]
                          for r in out["results"]],
                         ["2025-12-02T08:0%d:00.000Z" % i for i in range(3)])
        out = self.ctl("PATCH", "/_mock/objects/companies", {"inputs": [
            {"id": out["results"][0]["id"], "properties": {"city": "Opole"},
             "timestamp": "2025-12-02T09:00:00+01:00"}]})
        self.assertEqual(out["results"][0]["updatedAt"],
                         "2025-12-02T08:00:00.000Z")

    def test_search_filter_groups_or_and_limits(self):
        """filterGroups: any group may hold, every filter of a group must;
        HubSpot's limits (5 groups, 6 filters a group, 18 in all) refuse
        with 400 as HubSpot does."""
        for name, stage in (("a", "closedwon"), ("b", "closedlost"),
                            ("c", "appointmentscheduled")):
            self.ctl("POST", "/_mock/objects/deals", {
                "properties": {"dealname": name, "dealstage": stage}})

        def f(prop, value):
            return {"propertyName": prop, "operator": "EQ", "value": value}
        st, out, _ = self.call("POST", "/crm/v3/objects/deals/search", {
            "filterGroups": [{"filters": [f("dealstage", "closedwon")]},
                             {"filters": [f("dealstage", "closedlost"),
                                          f("dealname", "b")]}],
            "sorts": ["dealname"], "properties": ["dealname"]})
        self.assertEqual(st, 200, out)
        self.assertEqual([r["properties"]["dealname"] for r in out["results"]],
                         ["a", "b"])
        for groups in ([{"filters": [f("dealname", "a")]}] * 6,
                       [{"filters": [f("dealname", "a")] * 7}],
                       [{"filters": [f("dealname", "a")] * 6}] * 3 +
                       [{"filters": [f("dealname", "a")]}]):
            st, out, _ = self.call("POST", "/crm/v3/objects/deals/search",
                                   {"filterGroups": groups})
            self.assertEqual(st, 400, groups)
            self.assertEqual(out["category"], "VALIDATION_ERROR")
        st, out, _ = self.call("POST", "/crm/v3/objects/deals/search", {
            "filterGroups": [{"filters": [f("dealname", "a")] * 6}] * 3})
        self.assertEqual(st, 200, out)

    def test_search_contacts_by_lastmodifieddate(self):
        """Contacts are searched by lastmodifieddate, a date: compared as
        one with epoch milliseconds, as HubSpot does."""
        c = self.ctl("POST", "/_mock/objects/contacts", {
            "properties": {"email": "ola@example.com"},
            "timestamp": 1764662400000})
        st, out, _ = self.call("POST", "/crm/v3/objects/contacts/search", {
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE",
                 "value": "1764662400000"},
                {"propertyName": "lastmodifieddate", "operator": "LT",
                 "value": "1764662400001"}]}],
            "sorts": ["lastmodifieddate"],
            "properties": ["email", "lastmodifieddate"]})
        self.assertEqual(st, 200, out)
        self.assertEqual([r["id"] for r in out["results"]], [c["id"]])
        self.assertEqual(out["results"][0]["properties"]["lastmodifieddate"],
                         "2025-12-02T08:00:00.000Z")

    def test_hand_delete_permanent_and_unlink(self):
        _, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                              ("K-2", {"name": "b"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        deal = self.ctl("POST", "/_mock/objects/deals", {
            "properties": {"dealname": "d"},
            "associations": [{"toType": "companies", "toId": ids["K-1"]},
                             {"toType": "companies", "toId": ids["K-2"]}]})
        path = "/_mock/associations/companies/%s/deals/%s" % (ids["K-2"],
                                                              deal["id"])
        self.ctl("DELETE", path)
        st, out, _ = self.call("GET", "/crm/v4/objects/deals/%s/associations/"
                               "companies" % deal["id"])
        self.assertEqual([r["toObjectId"] for r in out["results"]],
                         [ids["K-1"]], "removed both ways")
        st, out, _ = self.call("DELETE", path, token=None)
        self.assertEqual(st, 404)
        # deleted by hand: archived, restorable, still readable as archived
        self.ctl("DELETE", "/_mock/objects/companies/" + ids["K-2"])
        self.assertEqual(self.one("companies", ids["K-2"])[0], 404)
        self.assertEqual(self.one("companies", ids["K-2"],
                                  "?archived=true")[0], 200)
        # deleted for good: nothing left, not even its associations
        self.ctl("DELETE", "/_mock/objects/companies/%s?permanent=true"
                 % ids["K-1"])
        self.assertEqual(self.one("companies", ids["K-1"],
                                  "?archived=true")[0], 404)
        self.assertNotIn(ids["K-1"], [o["id"] for o in self.ctl(
            "GET", "/_mock/objects/companies")["results"]])
        st, out, _ = self.call("GET", "/crm/v4/objects/deals/%s/associations/"
                               "companies" % deal["id"])
        self.assertEqual(out["results"], [])
        _, out, _ = self.upsert("companies", [("K-1", {"name": "again"})])
        self.assertTrue(out["results"][0]["new"], "its erp_id is free")

    def test_hand_merge(self):
        _, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                              ("K-2", {"name": "b",
                                                       "city": "Kraków"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        _, out, _ = self.upsert("contacts", [("C-1", {"email": "a@x.pl"}),
                                             ("C-2", {"email": "b@x.pl"})])
        cids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        for k in ("1", "2"):
            self.call("PUT", "/crm/v4/objects/contacts/%s/associations/"
                      "default/companies/%s" % (cids["C-" + k],
                                                ids["K-" + k]))
        merged = self.ctl("POST", "/_mock/merge/companies", {
            "primaryObjectId": ids["K-1"], "objectIdToMerge": ids["K-2"]})
        new = merged["id"]
        self.assertNotIn(new, ids.values(), "a merge makes a new record")
        self.assertEqual(merged["properties"]["erp_id"], "K-1")
        self.assertEqual(merged["properties"]["name"], "a", "primary wins")
        self.assertEqual(merged["properties"]["city"], "Kraków", "gaps filled")
        self.assertEqual(merged["properties"]["hs_merged_object_ids"],
                         "%s;%s" % (ids["K-1"], ids["K-2"]))
        # both old ids answer with the merged record under its new id
        for old in ids.values():
            st, got = self.one("companies", old, "?properties=erp_id")
            self.assertEqual((st, got["id"]), (200, new))
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/read",
                               {"inputs": [{"id": "K-1"}, {"id": "K-2"}],
                                "idProperty": "erp_id",
                                "properties": ["erp_id"]})
        self.assertEqual(st, 207, out)
        self.assertEqual([r["id"] for r in out["results"]], [new])
        self.assertEqual(out["errors"][0]["context"], {"ids": ["K-2"]})
        st, out, _ = self.call("GET", "/crm/v4/objects/companies/%s/"
                               "associations/contacts" % new)
        self.assertEqual(sorted(r["toObjectId"] for r in out["results"]),
                         sorted(cids.values()))
        listed = [o["id"] for o in self.ctl(
            "GET", "/_mock/objects/companies")["results"]]
        self.assertEqual(listed, [new])
        self.assertEqual(len(self.ctl("GET", "/_mock/merged")["results"]), 2)
        # the other reading of merged ids, and the older merge
        self.ctl("POST", "/_mock/config", {"merged_ids": "404",
                                           "merge_new_id": False})
        self.assertEqual(self.one("companies", ids["K-1"])[0], 404)
        _, out, _ = self.upsert("companies", [("K-3", {"name": "c"}),
                                              ("K-4", {"name": "d"})])
        more = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        merged = self.ctl("POST", "/_mock/merge/companies", {
            "primaryObjectId": more["K-3"], "objectIdToMerge": more["K-4"]})
        self.assertEqual(merged["id"], more["K-3"], "the primary keeps its id")
        self.assertEqual(self.one("companies", more["K-4"])[0], 404)
        st, out, _ = self.call("POST", "/_mock/merge/companies", {
            "primaryObjectId": more["K-3"], "objectIdToMerge": more["K-3"]},
            token=None)
        self.assertEqual(st, 400)

    # -- reading back: batch read, listing, GDPR delete, search ---------------

    def test_batch_read_by_id_property(self):
        rows = [("K-%d" % i, {"name": "n%d" % i}) for i in range(60)]
        self.upsert("companies", rows)
        path = "/crm/v3/objects/companies/batch/read"
        st, out, _ = self.call("POST", path, {
            "idProperty": "erp_id", "properties": ["name"],
            "inputs": [{"id": "K-%d" % i} for i in range(101)]})
        self.assertEqual(st, 400, out)
        self.assertIn("100", out["message"])
        st, out, _ = self.call("POST", path, {
            "idProperty": "erp_id", "properties": ["name"],
            "propertiesWithHistory": ["name"],
            "inputs": [{"id": "K-%d" % i} for i in range(51)]})
        self.assertEqual(st, 400, out)
        self.assertIn("50", out["message"])
        st, out, _ = self.call("POST", path, {
            "idProperty": "erp_id", "properties": ["name", "erp_id"],
            "propertiesWithHistory": ["name"],
            "inputs": [{"id": "K-1"}, {"id": "K-404"}, {"id": "K-405"}]})
        self.assertEqual(st, 207, out)
        self.assertEqual([r["properties"]["erp_id"] for r in out["results"]],
                         ["K-1"])
        self.assertEqual(out["results"][0]["propertiesWithHistory"]["name"]
                         [0]["value"], "n1")
        self.assertEqual(out["numErrors"], 1)
        self.assertEqual(out["errors"][0]["category"], "OBJECT_NOT_FOUND")
        self.assertEqual(out["errors"][0]["context"],
                         {"ids": ["K-404", "K-405"]})
        for k in ("status", "category", "message", "errors", "links"):
            self.assertIn(k, out["errors"][0], "StandardError requires it")
        st, out, _ = self.call("POST", path, {
            "idProperty": "name", "properties": [],
            "inputs": [{"id": "n1"}]})
        self.assertEqual(st, 400, out)
        self.assertIn("non-unique", out["message"])

    def test_list_objects_paged(self):
        self.upsert("companies", [("K-%d" % i, {"name": "n"})
                                  for i in range(25)])
        seen, after, pages = [], None, 0
        while True:
            path = "/crm/v3/objects/companies?limit=10&properties=erp_id"
            if after:
                path += "&after=" + after
            st, out, _ = self.call("GET", path)
            self.assertEqual(st, 200, out)
            self.assertLessEqual(len(out["results"]), 10)
            seen.extend(r["properties"]["erp_id"] for r in out["results"])
            pages += 1
            if "paging" not in out:
                break
            after = out["paging"]["next"]["after"]
        self.assertEqual(pages, 3)
        self.assertEqual(sorted(seen), sorted("K-%d" % i for i in range(25)))
        st, out, _ = self.call("GET", "/crm/v3/objects/companies?limit=10"
                               "&archived=true")
        self.assertEqual((st, out["results"]), (200, []))

    def test_gdpr_delete(self):
        path = "/crm/v3/objects/contacts/gdpr-delete"
        _, out, _ = self.upsert("contacts", [("C-1", {"email": "a@x.pl"}),
                                             ("C-2", {"email": "b@x.pl"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        st, out, r = self.call("POST", path, {"objectId": ids["C-1"]})
        self.assertEqual((st, out), (204, None))
        self.assertEqual(self.one("contacts", ids["C-1"],
                                  "?archived=true")[0], 404, "gone for good")
        st, _, _ = self.call("POST", path, {"objectId": "b@x.pl",
                                            "idProperty": "email"})
        self.assertEqual(st, 204)
        self.assertEqual(self.ctl("GET", "/_mock/objects/contacts")
                         ["results"], [])
        _, out, _ = self.upsert("contacts", [("C-1", {"email": "a@x.pl"})])
        self.assertTrue(out["results"][0]["new"], "it may come back")
        # an unknown e-mail is blocklisted: no contact may have it again
        st, _, _ = self.call("POST", path, {"objectId": "nobody@x.pl",
                                            "idProperty": "email"})
        self.assertEqual(st, 204)
        st, out, _ = self.upsert("contacts",
                                 [("C-3", {"email": "nobody@x.pl"})])
        self.assertEqual(st, 400, out)
        self.assertIn("nobody@x.pl", out["message"])
        for body, status in (({"objectId": "424242"}, 404),
                             ({}, 400),
                             ({"objectId": "1", "idProperty": "firstname"},
                              400),
                             ({"objectId": "1", "id": "1"}, 400)):
            st, out, _ = self.call("POST", path, body)
            self.assertEqual(st, status, (body, out))
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/"
                               "gdpr-delete", {"objectId": "1"})
        self.assertEqual(st, 400, out)

    def test_search_by_lastmodified_and_index_delay_of_edits(self):
        self.ctl("POST", "/_mock/config", {"search_per_second": 0})
        _, out, _ = self.upsert("companies", [("K-%d" % i, {"name": "n%d" % i})
                                              for i in range(5)])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        _, got = self.one("companies", ids["K-4"],
                          "?properties=hs_lastmodifieddate")
        since = got["properties"]["hs_lastmodifieddate"]
        time.sleep(0.01)        # the edits fall in later milliseconds
        for k in ("K-3", "K-1"):
            self.ctl("PATCH", "/_mock/objects/companies/" + ids[k],
                     {"properties": {"name": "edited " + k}})
            time.sleep(0.002)
        body = {"filterGroups": [{"filters": [{
                    "propertyName": "hs_lastmodifieddate", "operator": "GT",
                    "value": since}]}],
                "sorts": [{"propertyName": "hs_lastmodifieddate",
                           "direction": "ASCENDING"}],
                "properties": ["name", "hs_lastmodifieddate"], "limit": 1}
        path = "/crm/v3/objects/companies/search"
        st, out, _ = self.call("POST", path, body)
        self.assertEqual((st, out["total"]), (200, 2), out)
        self.assertEqual(out["results"][0]["id"], ids["K-3"])
        body["after"] = out["paging"]["next"]["after"]
        st, out, _ = self.call("POST", path, body)
        self.assertEqual([r["id"] for r in out["results"]], [ids["K-1"]])
        self.assertNotIn("paging", out)
        # epoch milliseconds work as well as ISO 8601
        body.pop("after")
        body["filterGroups"][0]["filters"][0]["value"] = "0"
        body["sorts"][0]["direction"] = "DESCENDING"
        st, out, _ = self.call("POST", path, body)
        self.assertEqual((out["total"], out["results"][0]["id"]),
                         (5, ids["K-1"]))
        # with an indexing delay, search sees the values from before an edit
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 3600000})
        self.ctl("PATCH", "/_mock/objects/companies/" + ids["K-0"],
                 {"properties": {"name": "renamed"}})
        self.ctl("DELETE", "/_mock/objects/companies/" + ids["K-2"])
        by_name = {"filterGroups": [{"filters": [{
            "propertyName": "name", "operator": "EQ", "value": "n0"}]}]}
        st, out, _ = self.call("POST", path, by_name)
        self.assertEqual([r["id"] for r in out["results"]], [ids["K-0"]])
        by_name["filterGroups"][0]["filters"][0]["value"] = "renamed"
        st, out, _ = self.call("POST", path, by_name)
        self.assertEqual(out["total"], 0, "not indexed yet")
        st, out, _ = self.call("POST", path, {})
        self.assertEqual(out["total"], 5, "the archived one is still found")
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 0})
        st, out, _ = self.call("POST", path, by_name)
        self.assertEqual([r["id"] for r in out["results"]], [ids["K-0"]])
        st, out, _ = self.call("POST", path, {})
        self.assertEqual(out["total"], 4)

    def test_contacts_search_by_lastmodifieddate(self):
        self.upsert("contacts", [("C-1", {"email": "a@x.pl"})])
        path = "/crm/v3/objects/contacts/search"

        def since_epoch(prop):
            return self.call("POST", path, {"filterGroups": [{"filters": [{
                "propertyName": prop, "operator": "GTE", "value": "0"}]}]}
            )[1]["total"]
        self.assertEqual(since_epoch("lastmodifieddate"), 1)
        self.assertEqual(since_epoch("hs_lastmodifieddate"), 0,
                         "contacts keep it in lastmodifieddate")
        self.ctl("POST", "/_mock/config",
                 {"contacts_hs_lastmodifieddate": True})
        self.assertEqual(since_epoch("hs_lastmodifieddate"), 1)

    # -- associations --------------------------------------------------------

    def test_associations_v4(self):
        _, co, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        _, ct, _ = self.upsert("contacts", [("P-1", {"email": "a@b.pl"})])
        _, dl, _ = self.upsert("deals", [("D-1", {"dealname": "d"})])
        cid, pid, did = (co["results"][0]["id"], ct["results"][0]["id"],
                         dl["results"][0]["id"])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/contacts/companies/batch/associate/"
            "default", {"inputs": [{"from": {"id": pid}, "to": {"id": cid}}]})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["results"][0]["associationSpec"]
                         ["associationTypeId"], 279)
        # HubSpot's schema has no 207 for associate/default: errors in a 200
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/contacts/companies/batch/associate/"
            "default", {"inputs": [{"from": {"id": pid}, "to": {"id": cid}},
                                   {"from": {"id": pid},
                                    "to": {"id": "777777"}}]})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["numErrors"], 1)
        st, out, _ = self.call("GET", "/crm/v4/objects/companies/%s/"
                               "associations/contacts" % cid)
        self.assertEqual(out["results"][0]["toObjectId"], pid)
        self.assertEqual([x["typeId"] for x in
                          out["results"][0]["associationTypes"]], [280])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/create",
            {"inputs": [
                {"from": {"id": did}, "to": {"id": cid},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": 341}]},
                {"from": {"id": did}, "to": {"id": "777777"},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": 341}]}]})
        self.assertEqual(st, 207, out)
        self.assertEqual(out["numErrors"], 1)
        links = self.ctl("GET", "/_mock/associations")["results"]
        have = {(a["fromType"], a["fromId"], a["toType"], a["toId"],
                 a["typeId"]) for a in links}
        self.assertIn(("deals", did, "companies", cid, 341), have)
        self.assertIn(("companies", cid, "deals", did, 342), have)
        self.assertIn(("contacts", pid, "companies", cid, 279), have)
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/create",
            {"inputs": [{"from": {"id": did}, "to": {"id": cid},
                         "types": [{"associationTypeId": "341"}]}]})
        self.assertEqual(st, 400)
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/archive",
            {"inputs": [{"from": {"id": did}, "to": [{"id": cid}]}]})
        self.assertEqual(st, 204)
        st, out, _ = self.call("GET", "/crm/v4/objects/companies/%s/"
                               "associations/deals" % cid)
        self.assertEqual(out["results"], [])
        # user-defined deal->deal label
        st, lab, _ = self.call("POST", "/crm/v4/associations/deals/deals/"
                               "labels", {"label": "Zamówienie",
                                          "name": "order_invoice",
                                          "inverseLabel": "Faktura"})
        self.assertEqual(st, 200, lab)
        tid = lab["results"][0]["typeId"]
        _, d2, _ = self.upsert("deals", [("D-2", {"dealname": "e"})])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/deals/batch/create",
            {"inputs": [{"from": {"id": did},
                         "to": {"id": d2["results"][0]["id"]},
                         "types": [{"associationCategory": "USER_DEFINED",
                                    "associationTypeId": tid}]}]})
        self.assertEqual(st, 201, out)
        self.assertEqual(out["results"][0]["labels"], ["Zamówienie"])
        # ids are strings, as HubSpot's schema says
        self.assertEqual(out["results"][0]["fromObjectId"], did)
        self.assertEqual(out["results"][0]["toObjectId"],
                         d2["results"][0]["id"])
        # the current label paths serve the same labels as the old one
        old = self.call("GET", "/crm/v4/associations/deals/deals/labels")[1]
        for path in ("/crm/associations/v4/deals/deals/labels",
                     "/crm/associations/2026-03/deals/deals/labels"):
            st, cur, _ = self.call("GET", path)
            self.assertEqual(st, 200, cur)
            self.assertEqual(cur, old)
        st, lab, _ = self.call("POST", "/crm/associations/v4/deals/deals/"
                               "labels", {"label": "Oferta",
                                          "name": "offer_deal"})
        self.assertEqual(st, 200, lab)

    # -- no kinder than HubSpot (issue 11, point 9) --------------------------

    def test_no_null_property_values(self):
        self.upsert("companies", [("K-1", {"name": "a"})])
        st, out, _ = self.call(
            "POST", "/crm/v3/objects/companies/batch/read",
            {"inputs": [{"id": "K-1"}], "idProperty": "erp_id",
             "properties": ["name", "domain", "nip"]})
        self.assertEqual(st, 200, out)
        props = out["results"][0]["properties"]
        self.assertEqual(props["name"], "a")
        self.assertNotIn("domain", props)
        self.assertTrue(all(isinstance(v, str) for v in props.values()))

    def test_upsert_whole_batch_mode(self):
        rows = [("K-1", {"name": "a"}), ("K-2", {"nip": "x", "bogus": "1"})]
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 207, out)
        self.ctl("POST", "/_mock/config", {"upsert_whole_batch": True})
        self.ctl("POST", "/_mock/reset", {
            "unique_properties": {"companies": ["erp_id"]},
            "properties": {"companies": [{"name": "nip"}]},
            "upsert_whole_batch": True})
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 400, out)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertNotIn("context", out)
        objs = self.ctl("GET", "/_mock/objects/companies")["results"]
        self.assertEqual(objs, [], "nothing of the batch is written")
        st, out, _ = self.upsert("companies", rows[:1])
        self.assertEqual(st, 200, out)

    def test_search_index_delay_and_cap(self):
        # a delay no test run outlasts, then none: no race with the clock
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 3600000,
                                           "search_max_total": 3})
        self.upsert("companies", [("K-%d" % i, {"name": "n%d" % i})
                                  for i in range(5)])
        body = {"filterGroups": [{"filters": [{"propertyName": "name",
                                               "operator": "HAS_PROPERTY"}]}],
                "limit": 2}
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, out["total"]), (200, 0),
                         "just created: not indexed yet")
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 0})
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, out["total"], len(out["results"])), (200, 5, 2))
        body["after"] = out["paging"]["next"]["after"]
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, len(out["results"])), (200, 1),
                         "the page is cut at the cap")
        body["after"] = "3"
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual(st, 400, out)

    def test_unique_reuse_after_archive(self):
        for reuse in (True, False):
            self.ctl("POST", "/_mock/config",
                     {"unique_reuse_after_archive": reuse})
            key = "R-%s" % reuse
            _, out, _ = self.upsert("companies", [(key, {"name": "a"})])
            oid = out["results"][0]["id"]
            st, _, _ = self.call("POST",
                                 "/crm/v3/objects/companies/batch/archive",
                                 {"inputs": [{"id": oid}]})
            self.assertEqual(st, 204)
            st, out, _ = self.upsert("companies", [(key, {"name": "b"})])
            if reuse:
                self.assertEqual(st, 200, out)
                self.assertNotEqual(out["results"][0]["id"], oid)
            else:
                self.assertEqual(st, 409, out)
                self.assert_error_shape(out, "CONFLICT")
                self.assertIn(oid, out["message"])

    def test_pipeline_limits_and_granular_scopes(self):
        st, out, _ = self.call("GET", "/crm/v3/limits/pipelines")
        self.assertEqual(st, 200, out)
        deals = out["hubspotDefinedObjectTypes"][0]
        self.assertEqual((deals["objectTypeId"], deals["usage"]), ("0-3", 1))
        self.ctl("POST", "/_mock/config", {"deal_pipeline_limit": 1})
        st, out, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Invoices", "displayOrder": 1,
            "stages": [{"label": "Issued", "displayOrder": 0,
                        "metadata": {"probability": "0.5"}}]})
        self.assertEqual(st, 400, out)
        body = {"tokenKey": TOKEN}
        st, out, _ = self.call(
            "POST", "/oauth/v2/private-apps/get/access-token-info", body)
        self.assertIn("e-commerce", out["scopes"])
        self.ctl("POST", "/_mock/config", {"granular_scopes": True})
        st, out, _ = self.call(
            "POST", "/oauth/v2/private-apps/get/access-token-info", body)
        self.assertNotIn("e-commerce", out["scopes"])
        self.assertIn("crm.objects.line_items.write", out["scopes"])
        self.assertIn("crm.objects.products.write", out["scopes"])

    def test_required_properties(self):
        self.ctl("POST", "/_mock/config",
                 {"required_properties": {"companies": ["nip"]}})
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b",
                                                        "nip": "1"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"], {"ids": ["K-1"]})
        self.assertIn('REQUIRED_PROPERTY', out["errors"][0]["message"])
        st, out, _ = self.upsert("companies", [("K-2", {"name": "c"})])
        self.assertEqual(st, 200, out)  # an update need not repeat it
        st, out, _ = self.upsert("companies", [("K-2", {"nip": ""})])
        self.assertEqual(st, 400, out)  # nor may it clear it

    # -- properties ----------------------------------------------------------

    def test_property_create_and_conflict(self):
        p = {"name": "credit_limit", "label": "Limit kredytowy",
             "type": "number", "fieldType": "number",
             "groupName": "companyinformation"}
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", p)
        self.assertEqual(st, 201, out)
        self.assertEqual(out["name"], "credit_limit")
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", p)
        self.assertEqual(st, 409)
        self.assert_error_shape(out, "CONFLICT")
        self.assertEqual(out["message"],
                         "Property named 'credit_limit' already exists.")
        bad = dict(p, name="x2", fieldType="select")
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", bad)
        self.assertEqual(st, 400)
        st, out, _ = self.call("GET", "/crm/v3/properties/companies/"
                               "credit_limit")
        self.assertEqual(out["type"], "number")
        st, out, _ = self.upsert("companies", [("K-1", {"credit_limit":
                                                        "1000.50"})])
        self.assertEqual(st, 200, out)

    # -- auth, rate limits, faults -------------------------------------------

    def test_auth_401_and_scopes_403(self):
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/1",
                               token=None)
        self.assertEqual(st, 401)
        self.assert_error_shape(out, "INVALID_AUTHENTICATION")
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/1",
                               token="wrong")
        self.assertEqual(st, 401)
        self.ctl("POST", "/_mock/faults", {"missing_scopes": ["products"]})
        st, out, _ = self.call("POST", "/crm/v3/objects/products/batch/"
                               "create", {"inputs": []})
        self.assertEqual(st, 403)
        self.assert_error_shape(out, "MISSING_SCOPES")
        self.assertEqual(out["errors"][0]["context"]
                         ["requiredGranularScopes"], ["e-commerce"])
        st, out, _ = self.call("POST", "/oauth/v2/private-apps/get/"
                               "access-token-info", {"tokenKey": TOKEN},
                               token=None)
        self.assertEqual(st, 200)
        self.assertIn("crm.objects.companies.write", out["scopes"])
        self.assertNotIn("e-commerce", out["scopes"])

    def test_owners_paged_and_archived(self):
        owners = [{"email": "o%d@example.com" % i} for i in range(5)]
        owners.append({"id": "99", "email": "gone@example.com",
                       "archived": True})
        self.ctl("POST", "/_mock/config", {"owners": owners})
        seen, after = [], None
        while True:
            st, out, _ = self.call(
                "GET", "/crm/v3/owners?limit=2"
                + ("&after=" + after if after else ""))
            self.assertEqual(st, 200, out)
            self.assertLessEqual(len(out["results"]), 2)
            seen += [o["email"] for o in out["results"]]
            after = out.get("paging", {}).get("next", {}).get("after")
            if not after:
                break
        self.assertEqual(seen, ["o%d@example.com" % i for i in range(5)])
        st, out, _ = self.call("GET", "/crm/v3/owners?archived=true")
        self.assertEqual([(o["id"], o["archived"]) for o in out["results"]],
                         [("99", True)])
        self.assertNotIn("paging", out)
        st, out, _ = self.call("GET", "/crm/v3/owners?limit=0")
        self.assertEqual(st, 400)

    def test_rate_limit_429(self):
        self.ctl("POST", "/_mock/config", {"max_per_window": 3,
                                           "window_ms": 10000,
                                           "retry_after": True})
        for i in range(3):
            st, out, r = self.call("GET", "/crm/v3/owners")
            self.assertEqual(st, 200)
            self.assertEqual(r.getheader("X-HubSpot-RateLimit-Remaining"),
                             str(2 - i))
        st, out, r = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 429)
        self.assertEqual(out["policyName"], "TEN_SECONDLY_ROLLING")
        self.assertEqual(out["errorType"], "RATE_LIMIT")
        self.assertNotIn("category", out)
        self.assertEqual(out["message"],
                         "You have reached your ten_secondly_rolling limit.")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Max"), "3")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Remaining"), "0")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Daily"), "250000")
        self.assertIsNotNone(r.getheader(
            "X-HubSpot-RateLimit-Interval-Milliseconds"))
        ra = int(r.getheader("Retry-After"))
        self.assertTrue(1 <= ra <= 10)
        stats = self.ctl("GET", "/_mock/stats")
        self.assertEqual(stats["rateLimited"], 1)
        self.assertEqual(stats["maxWindowCalls"], 3)
        # search has its own per-second limit
        self.ctl("POST", "/_mock/config", {"max_per_window": 0,
                                           "search_per_second": 2})
        # (a rolling second: under load two calls may fall in different
        # seconds, so call until refused, as a client would)
        codes = []
        while 429 not in codes and len(codes) < 50:
            codes.append(self.call("POST", "/crm/v3/objects/companies/search",
                                   {})[0])
        self.assertEqual(codes[0], 200)
        self.assertEqual(codes[-1], 429)
        self.assertGreaterEqual(len(codes), 3, "two searches a second pass")

    def test_faults(self):
        self.ctl("POST", "/_mock/faults", {"malformed_share": 1.0})
        r, data = self.raw("GET", "/crm/v3/owners")
        self.assertEqual(r.status, 200)
        self.assertRaises(ValueError, json.loads, data)
        self.ctl("POST", "/_mock/faults", {"down": "503"})
        r, data = self.raw("GET", "/crm/v3/owners")
        self.assertEqual(r.status, 503)
        self.assertIn(b"<html>", data)
        self.ctl("POST", "/_mock/faults", {"down": "refuse"})
        with self.assertRaises((http.client.RemoteDisconnected,
                                ConnectionError)):
            self.raw("GET", "/crm/v3/owners")
        self.conn.close()
        self.ctl("POST", "/_mock/faults", {"truncated_share": 1.0})
        with self.assertRaises(http.client.IncompleteRead):
            self.raw("GET", "/crm/v3/owners")
        self.conn.close()
        self.ctl("POST", "/_mock/faults", {"force_status": {
            "count": 1, "status": 502, "path_contains": "owners"}})
        st, _, _ = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 502)
        st, _, _ = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 200)
        self.ctl("POST", "/_mock/faults", {})
        self.assertEqual(self.ctl("GET", "/_mock/faults"), {})

    def test_requests_log_and_stats(self):
        self.upsert("companies", [("K-1", {"name": "a"}),
                                  ("K-2", {"name": "b"})])
        self.call("GET", "/crm/v3/objects/companies/1", token="bad")
        log = self.ctl("GET", "/_mock/requests?since=0")
        self.assertEqual([e["status"] for e in log["results"]], [200, 401])
        e = log["results"][0]
        self.assertEqual(e["path"], "/crm/v3/objects/companies/batch/upsert")
        self.assertEqual(e["inputs"], 2)
        self.assertGreater(e["bodyBytes"], 20)
        self.assertNotIn("body", e)
        later = self.ctl("GET", "/_mock/requests?since=%d" % e["seq"])
        self.assertEqual(len(later["results"]), 1)
        stats = self.ctl("GET", "/_mock/stats")
        self.assertEqual(stats["calls"], 2)
        self.assertEqual(stats["byStatus"], {"200": 1, "401": 1})
        self.assertEqual(stats["objects"]["companies"]["active"], 2)
        self.assertGreater(stats["cpuSeconds"], 0)

    def test_keepalive(self):
        # one connection carries every request (the worker's curl handle
        # reuses it): the socket is never closed, however many calls
        self.ctl("POST", "/_mock/config", {"max_per_window": 0})
        st, _, r = self.call("GET", "/crm/v3/owners")
        sock = self.conn.sock
        self.assertIsNotNone(sock)
        for i in range(300):
            st, _, r = self.call("GET", "/crm/v3/owners")
            self.assertEqual(st, 200)
            self.assertNotEqual((r.getheader("Connection") or "").lower(),
                                "close")
            self.assertIs(self.conn.sock, sock, "request %d reconnected" % i)

    def test_tls(self):
        if not shutil.which("openssl"):
            self.skipTest("no openssl")
        d = tempfile.mkdtemp(dir=self.tmp)
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                        "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        proc, port = start_mock(self.tmp, "--tls-cert", cert, "--tls-key",
                                key)
        try:
            strict = ssl.create_default_context()
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                            context=strict)
            with self.assertRaises(ssl.SSLCertVerificationError):
                c.request("GET", "/_mock/health")
            c.close()
            ok = ssl.create_default_context(cafile=cert)
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                            context=ok)
            c.request("GET", "/_mock/health")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"ok"))
            c.close()
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()
            proc.stderr.close()

    # -- native orders (0-123) and date-versioned paths ----------------------

    def test_orders_pipeline_and_associations(self):
        self.ctl("POST", "/_mock/config",
                 {"unique_properties": {"orders": ["erp_id"]}})
        st, out, _ = self.call("GET", "/crm/v3/pipelines/orders")
        self.assertEqual(st, 200, out)
        pipeline = out["results"][0]
        stages = [x["id"] for x in pipeline["stages"]]
        self.assertIn("shipped", stages)
        st, out, _ = self.upsert("orders", [
            ("Z-1", {"hs_order_name": "Z-1", "hs_pipeline_stage": "shipped"})])
        self.assertEqual(st, 200, out)
        order = out["results"][0]
        self.assertEqual(order["properties"]["hs_pipeline"], pipeline["id"],
                         "a stage without a pipeline means the default one")
        st, out, _ = self.upsert("orders", [
            ("Z-2", {"hs_order_name": "Z-2", "hs_pipeline_stage": "lost"})])
        self.assertEqual(st, 400, out)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        st, deal, _ = self.upsert("deals", [("D-1", {"dealname": "D-1"})])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/orders/deals/batch/associate/default",
            {"inputs": [{"from": {"id": order["id"]},
                         "to": {"id": deal["results"][0]["id"]}}]})
        self.assertEqual(st, 200, out)
        got = [(x["fromType"], x["toType"])
               for x in self.ctl("GET", "/_mock/associations")["results"]]
        self.assertIn(("orders", "deals"), got)
        self.assertIn(("deals", "orders"), got)

    def test_order_pipeline_create_and_spelling(self):
        st, pl, _ = self.call("POST", "/crm/v3/pipelines/orders", {
            "label": "Orders (ERP)", "displayOrder": 1,
            "stages": [{"label": "In progress", "displayOrder": 0},
                       {"label": "Fulfilled", "displayOrder": 1,
                        "metadata": {}}]})
        self.assertEqual(st, 201, pl)
        self.assertEqual([x["label"] for x in pl["stages"]],
                         ["In progress", "Fulfilled"])
        self.assertRegex(pl["stages"][0]["id"], "^[0-9a-f-]{36}$",
                         "order stages get generated ids")
        st, out, _ = self.call("GET", "/crm/v3/pipelines/0-123")
        self.assertIn("Orders (ERP)", [x["label"] for x in out["results"]])
        st, out, _ = self.call("POST", "/crm/v3/pipelines/orders", {
            "label": "Orders (ERP)", "displayOrder": 1,
            "stages": [{"label": "X", "displayOrder": 0}]})
        self.assertEqual(st, 409, out)
        self.ctl("POST", "/_mock/config", {"order_pipeline_limit": 2})
        st, out, _ = self.call("POST", "/crm/v3/pipelines/orders", {
            "label": "More", "displayOrder": 2,
            "stages": [{"label": "X", "displayOrder": 0}]})
        self.assertEqual(st, 400, out)
        # only one spelling of the order type, when the test says so
        self.ctl("POST", "/_mock/config", {"order_type_name": "0-123"})
        st, out, _ = self.call("GET", "/crm/v3/pipelines/orders")
        self.assertEqual(st, 400, out)
        self.assertIn("Unable to infer object type from: orders",
                      out["message"])
        st, out, _ = self.call("GET", "/crm/objects/2026-03/order")
        self.assertEqual(st, 400, out)
        st, out, _ = self.call("GET", "/crm/v3/pipelines/0-123")
        self.assertEqual(st, 200, out)

    def test_date_versioned_paths(self):
        st, out, _ = self.call(
            "POST", "/crm/objects/2026-03/companies/batch/upsert",
            {"inputs": [{"idProperty": "erp_id", "id": "V-1",
                         "properties": {"name": "Versioned"}}]})
        self.assertEqual(st, 200, out)
        company = out["results"][0]["id"]
        st, out, _ = self.upsert("contacts", [("V-2", {"firstname": "A"})])
        contact = out["results"][0]["id"]
        st, out, _ = self.call(
            "POST", "/crm/associations/2026-03/contacts/companies/batch/"
            "associate/default",
            {"inputs": [{"from": {"id": contact}, "to": {"id": company}}]})
        self.assertEqual(st, 200, out)
        st, out, _ = self.call("GET", "/crm/properties/2026-03/companies")
        self.assertEqual(st, 200, out)
        st, out, _ = self.call("GET", "/crm/pipelines/2026-03/deals")
        self.assertEqual(st, 200, out)
        log = self.ctl("GET", "/_mock/requests")["results"]
        self.assertIn("/crm/objects/2026-03/companies/batch/upsert",
                      [x["path"] for x in log],
                      "the log keeps the path as it was called")


if __name__ == "__main__":
    unittest.main(verbosity=2)

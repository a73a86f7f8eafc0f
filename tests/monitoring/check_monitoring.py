#!/usr/bin/python3
"""
check_monitoring.py - monitoring/ is consistent with itself and the README.

The metrics are what monitoring/postgres_exporter.yaml defines: for each
query (namespace) and each GAUGE or COUNTER column, <namespace>_<column>,
labelled by the query's LABEL columns (and Prometheus' job and instance).
This checks that

  - monitoring/erpcrm_dashboard.json parses as a Grafana dashboard, names
    only those metrics and labels, and draws the queue, the lag, the
    delivery rate, the API budget and the failures;
  - monitoring/erpcrm_alerts.yaml names only those metrics and labels, and
    holds the README's alert expressions (README.md, "Alert on ...").

    python3 check_monitoring.py [--self-test]

--self-test also shows that a dashboard naming an unknown metric or label,
or missing a panel, is refused.  Exit status 0 when all is well.
"""

import copy
import json
import os
import re
import sys

import yaml

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MON = os.path.join(TOP, "monitoring")

# What the dashboard must draw: a name and the metrics that count for it.
MUST_DRAW = {
    "queue": {"erpcrm_mapping_queue_depth"},
    "lag": {"erpcrm_mapping_oldest_pending_seconds"},
    "rate": {"erpcrm_mapping_delivered_per_second", "erpcrm_worker_objects_sent"},
    "budget": {"erpcrm_worker_daily_remaining", "erpcrm_api_calls_today"},
    "failures": {"erpcrm_mapping_failed", "erpcrm_api_errors_today"},
}
SCRAPE_LABELS = {"job", "instance"}

# PromQL words that look like names but are not metrics or labels
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "predict_linear", "absent", "absent_over_time", "abs", "ceil", "floor",
    "round", "clamp_min", "clamp_max", "label_values", "label_replace",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "changes", "resets", "time", "vector", "scalar", "sort", "sort_desc",
}


def exporter_metrics():
    """{metric name: set of labels} from the exporter's query file."""
    with open(os.path.join(MON, "postgres_exporter.yaml")) as f:
        spec = yaml.safe_load(f)
    metrics = {}
    for ns, q in spec.items():
        cols = [(name, d["usage"]) for c in q["metrics"]
                for name, d in c.items()]
        labels = {n for n, u in cols if u == "LABEL"} | SCRAPE_LABELS
        for n, u in cols:
            if u in ("GAUGE", "COUNTER"):
                metrics["%s_%s" % (ns, n)] = labels
    return metrics


def expr_problems(expr, metrics, where):
    """Metrics and labels an expression names that the exporter lacks."""
    out = []
    # strip string literals and durations, then look at the names
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    used = set()
    for m in re.finditer(r"\b(erpcrm_[a-z0-9_]+)\b", bare):
        name = m.group(1)
        used.add(name)
        if name not in metrics:
            out.append("%s: metric %s is not in postgres_exporter.yaml"
                       % (where, name))
    labels = set()
    for grp in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)",
                          bare):
        labels |= {x.strip() for x in grp.split(",") if x.strip()}
    for grp in re.findall(r"\{([^}]*)\}", bare):
        labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)",
                                 grp))
    for m in re.finditer(r"label_values\(\s*([a-z0-9_]+)\s*,\s*([a-z_]+)\s*\)",
                         bare):
        labels.add(m.group(2))
    known = set(SCRAPE_LABELS)
    for name in used:
        known |= metrics.get(name, set())
    for label in sorted(labels - known):
        out.append("%s: label %s is not one of %s" % (where, label,
                                                     ", ".join(sorted(known))))
    return out, used


def check_dashboard(dash, metrics):
    problems = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append("dashboard: no %s" % key)
    drawn = set()
    for p in dash.get("panels", []):
        title = p.get("title", "?")
        targets = p.get("targets") or []
        if not targets:
            problems.append("panel %s: no query" % title)
        for t in targets:
            expr = t.get("expr")
            if not expr:
                problems.append("panel %s: a target without expr" % title)
                continue
            out, used = expr_problems(expr, metrics, "panel %s" % title)
            problems += out
            drawn |= used
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if q:
            out, _ = expr_problems(q, metrics, "variable %s" % v.get("name"))
            problems += out
    for what, names in MUST_DRAW.items():
        if not drawn & names:
            problems.append("dashboard: nothing draws the %s (%s)"
                            % (what, " or ".join(sorted(names))))
    return problems


def check_alerts(metrics):
    problems = []
    with open(os.path.join(MON, "erpcrm_alerts.yaml")) as f:
        rules = yaml.safe_load(f)
    exprs = []
    for g in rules["groups"]:
        for r in g["rules"]:
            out, _ = expr_problems(r["expr"], metrics,
                                   "rule %s" % r.get("alert", r.get("record")))
            problems += out
            exprs.append(re.sub(r"\s+", " ", r["expr"]).strip())
    with open(os.path.join(TOP, "README.md")) as f:
        readme = f.read()
    said = re.search(r"Alert on (.*?)\.\n", readme, re.S)
    if not said:
        problems.append("README.md: no \"Alert on ...\" sentence")
    else:
        named = re.findall(r"`([^`]+)`", said.group(1))
        if not named:
            problems.append("README.md: the \"Alert on\" sentence names "
                            "no expression")
        for e in named:
            if re.sub(r"\s+", " ", e) not in exprs:
                problems.append("README.md alerts on `%s`, "
                                "erpcrm_alerts.yaml has no such rule" % e)
    return problems


def self_test(dash, metrics):
    """The checker refuses a dashboard that is wrong in each way."""
    ok = True
    cases = []
    d = copy.deepcopy(dash)
    d["panels"][0]["targets"][0]["expr"] = "sum(erpcrm_mapping_backlog)"
    cases.append(("an unknown metric", d, "erpcrm_mapping_backlog is not in"))
    d = copy.deepcopy(dash)
    d["panels"][0]["targets"][0]["expr"] = \
        "sum by (table) (erpcrm_mapping_failed)"
    cases.append(("an unknown label", d, "label table is not one of"))
    d = copy.deepcopy(dash)
    d["panels"] = [p for p in d["panels"]
                   if "oldest_pending" not in json.dumps(p)]
    cases.append(("no lag panel", d, "nothing draws the lag"))
    for what, d, expect in cases:
        got = check_dashboard(d, metrics)
        if not any(expect in p for p in got):
            print("self-test: %s was not refused (%s)" % (what, got))
            ok = False
    return ok


def main():
    metrics = exporter_metrics()
    with open(os.path.join(MON, "erpcrm_dashboard.json")) as f:
        dash = json.load(f)
    problems = check_dashboard(dash, metrics) + check_alerts(metrics)
    for p in problems:
        print("monitoring: " + p)
    ok = not problems
    if "--self-test" in sys.argv[1:]:
        ok = self_test(dash, metrics) and ok
    if ok:
        print("monitoring: the dashboard (%d panels) and the alert rules name "
              "only the exporter's %d metrics"
              % (len(dash["panels"]), len(metrics)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

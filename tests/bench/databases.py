"""
databases.py - make bench BENCH_ONLY=reach: delivery from 1, 4 and 16 ERP
databases of one cluster, one worker each (started by the launcher), to
one portal (the mock, no rate limit; the databases share one limiter).

For each count N: N databases of BENCH_DB_COMPANIES companies each are
resynced at once; measured are the wall time until every object is in the
mock, the workers' total CPU (user + system, /proc/<pid>/stat) per object
sent, their memory (VmRSS, RssAnon: private) when idle and after the run,
and the CPU N idle workers use in BENCH_DB_IDLE seconds.  Linear cost means
CPU per object and memory per worker stay flat as N grows.
"""

import os
import subprocess
import time

import bench as B

COUNTS = (1, 4, 16)


def settings():
    quick = os.environ.get("BENCH_QUICK") == "1"
    return {
        "companies": int(os.environ.get("BENCH_DB_COMPANIES") or (500 if quick else 3000)),
        "idle": int(os.environ.get("BENCH_DB_IDLE") or (5 if quick else 20)),
    }


def restart_for_databases(pg):
    """Every database with erpcrm gets a worker; room for 16 of them."""
    with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
        f.write("\n# make bench BENCH_ONLY=reach\n"
                "erpcrm.database = ''\n"
                "max_worker_processes = 24\n")
    B.run(["pg_ctl", "-D", pg.data, "-l", pg.logfile, "-m", "fast", "-w", "restart"])
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        pg.pid = int(f.readline())


def workers(pg, db):
    """{database: (pid, objects_sent, state)} of the workers of the cluster."""
    out = pg.sql(db, "SELECT database, coalesce(pid, 0), objects_sent, state"
                     " FROM erpcrm.workers")
    result = {}
    for line in out.splitlines():
        name, pid, sent, state = line.split("|")
        result[name] = (int(pid), int(sent), state)
    return result


def wait_for(what, pred, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError("timed out waiting for %s" % what)


def one_count(pg, mock, n, cfg):
    k = cfg["companies"]
    names = ["erp%02d" % i for i in range(1, n + 1)]
    for name in names:
        pg.sql("postgres", "CREATE DATABASE %s" % name)
        pg.sql(name, """
CREATE EXTENSION erpcrm;
CREATE SCHEMA bench;
CREATE TABLE bench.customers (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO bench.customers SELECT g, 'Firma ' || g FROM generate_series(1, %d) g;
CREATE VIEW bench.hs_companies AS
  SELECT '%s-' || id::text AS erp_id, name FROM bench.customers;
SELECT erpcrm.map('companies', 'bench.hs_companies', 'companies');
""" % (k, name))
    first = names[0]
    wait_for("%d workers idle" % n, lambda: (
        lambda w: all(d in w and w[d][0] and w[d][2] == "idle" for d in names))(
            workers(pg, first)), 120)
    w0 = workers(pg, first)
    pids = [w0[d][0] for d in names]
    rss_idle = [B.proc_status(p) for p in pids]
    cpu0 = [B.proc_cpu(p) for p in pids]
    sent0 = sum(w0[d][1] for d in names)
    s0 = mock.stats()
    t0 = time.time()
    for name in names:
        pg.sql(name, "SELECT erpcrm.resync('companies')")
    wait_for("%d objects" % (n * k), lambda: sum(
        v[1] for d, v in workers(pg, first).items() if d in names) - sent0 >= n * k,
        1800)
    t1 = time.time()
    cpu1 = [B.proc_cpu(p) for p in pids]
    rss_busy = [B.proc_status(p) for p in pids]
    s1 = mock.stats()
    # idle: what N workers cost doing nothing
    time.sleep(1)
    c_idle0 = [B.proc_cpu(p) for p in pids]
    time.sleep(cfg["idle"])
    c_idle1 = [B.proc_cpu(p) for p in pids]
    objects = n * k
    cpu = sum(cpu1) - sum(cpu0)
    r = {
        "n": n, "objects": objects, "wall": t1 - t0,
        "rate": objects / max(t1 - t0, 1e-6),
        "cpu": cpu, "cpu_us": cpu * 1e6 / objects,
        "cpu_max_share": max(b - a for a, b in zip(cpu0, cpu1)) / max(t1 - t0, 1e-6),
        "mock_cpu": s1["cpuSeconds"] - s0["cpuSeconds"],
        "calls": s1["calls"] - s0["calls"],
        "rss_idle": sum(x["VmRSS"] for x in rss_idle),
        "anon_idle": sum(x["RssAnon"] for x in rss_idle),
        "rss_busy": sum(x["VmRSS"] for x in rss_busy),
        "anon_busy": sum(x["RssAnon"] for x in rss_busy),
        "idle_cpu": sum(c_idle1) - sum(c_idle0),
    }
    B.log("databases: %d x %d companies in %.1f s, workers' CPU %.2f s (%.0f us/object),"
          " RssAnon %.1f MiB" % (n, k, r["wall"], cpu, r["cpu_us"], B.mb(r["anon_busy"])))
    for name in names:
        pg.sql("postgres", "DROP DATABASE %s" % name)
    return r


def table(results, cfg, load):
    out = []
    w = out.append
    w("make bench BENCH_ONLY=reach: delivery from N databases of one cluster, "
      "one worker each, %d companies per database, one portal (the mock, no "
      "rate limit)" % cfg["companies"])
    w("revision: %s" % os.environ.get("BENCH_REVISION", "unknown"))
    hdr = ("%-4s %9s %8s %10s %11s %12s %13s %15s %17s %13s"
           % ("N", "objects", "wall s", "objects/s", "CPU s", "CPU us/obj",
              "max cpu/wall", "RssAnon idle", "RssAnon after", "idle CPU s"))
    w(hdr)
    w("-" * len(hdr))
    for r in results:
        w("%-4d %9d %8.1f %10.0f %11.2f %12.0f %13.2f %11.1f MiB %13.1f MiB %13.3f"
          % (r["n"], r["objects"], r["wall"], r["rate"], r["cpu"], r["cpu_us"],
             r["cpu_max_share"], B.mb(r["anon_idle"]), B.mb(r["anon_busy"]),
             r["idle_cpu"]))
    w("-" * len(hdr))
    one = results[0]
    for r in results[1:]:
        w("N=%d vs N=1: CPU per object x%.2f, RssAnon per worker x%.2f "
          "(after the run), idle CPU per worker x%.2f"
          % (r["n"], r["cpu_us"] / max(one["cpu_us"], 1e-9),
             (r["anon_busy"] / r["n"]) / max(one["anon_busy"], 1),
             (r["idle_cpu"] / r["n"]) / max(one["idle_cpu"], 1e-3)))
    w("CPU s: all workers together, resync to the last object in the mock; "
      "max cpu/wall: the busiest worker's share of one core;")
    w("RssAnon: the workers' private memory summed (VmRSS includes shared "
      "buffers they touched); idle CPU: all workers, %d s after the run"
      % cfg["idle"])
    other = load.get("reach", (0, 0))[0]
    w("other processes on the machine used %.2f cores meanwhile%s"
      % (other, " (figures disturbed)" if other > 0.1 else ""))
    return "\n".join(out) + "\n"


def main(out_path):
    cfg = settings()
    work = B.tempfile.mkdtemp(prefix="erpcrm-bench-db.")
    mock = pg = None
    try:
        mock = B.Mock(work)
        mock.reset()
        pg = B.Cluster(work, mock.port)
        restart_for_databases(pg)
        meter = B.CpuMeter(pg.pid, mock.proc.pid)
        a = meter.snapshot()
        results = [one_count(pg, mock, n, cfg) for n in COUNTS]
        load = {"reach": meter.between(a, meter.snapshot())}
        text = table(results, cfg, load)
        print("\n" + text, end="")
        with open(out_path, "w") as f:
            f.write(text)
    finally:
        if pg:
            pg.stop()
        if mock:
            mock.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            subprocess.run(["rm", "-rf", work])

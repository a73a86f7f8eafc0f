/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The erpcrm launcher: one background worker per cluster that starts one
 *	  delivery worker per database that has the extension.
 *
 *	  It is connected to no database and reads only the shared catalogs
 *	  (pg_database, pg_authid).  Every second, and at once when a
 *	  CREATE EXTENSION erpcrm commits (erpcrm._launcher_notify()) or a worker
 *	  starts or stops, it compares the databases with the workers:
 *
 *	  - a database it has not looked at gets a worker, which leaves at once
 *		when the database has no erpcrm (the launcher then leaves it alone
 *		until a CREATE EXTENSION there says otherwise, or 10 minutes pass);
 *	  - a worker that stopped is started again after 5 seconds (at once when
 *		it left for a changed setting); one that never got going waits
 *		longer each time, up to 5 minutes;
 *	  - when no background worker slot is free (max_worker_processes), the
 *		database's slot says so, and the log once per database.
 *
 *	  With erpcrm.database set, only that database is served, whether it has
 *	  the extension or not, as before 1.3.  The launcher also waits for the
 *	  role erpcrm.role names (to exist and have LOGIN) before it starts any
 *	  worker, and says so.
 *
 *	  DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
 *	  TEMPLATE need the database free of connections, and DROP EXTENSION
 *	  erpcrm free of the worker's locks: a ProcessUtility hook stops the
 *	  database's worker first and keeps the launcher off it meanwhile.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "erpcrm.h"
#include "subscribe.h"

#define LAUNCHER_NAP_MS			1000
#define RESTART_DELAY_MS		5000
#define MAX_RESTART_DELAY_MS	(5 * 60 * 1000)
#define HOLD_MS					10000
/* a handler past erpcrm.handler_timeout has this long to stop when cancelled */
#define HANDLER_GRACE_MS		10000
#define UNWANTED_GRACE_MS		10000
/* a database without erpcrm is looked at again this often, in case its
 * CREATE EXTENSION ran an older script that does not tell the launcher */
#define REPROBE_MS				(10 * 60 * 1000)

typedef enum DbStatus
{
	DB_UNKNOWN,					/* not looked at: a worker will find out */
	DB_SERVED,					/* has erpcrm (or erpcrm.database names it) */
	DB_NO_EXTENSION				/* a worker found no erpcrm there */
} DbStatus;

typedef struct DbEntry
{
	Oid			oid;
	char		name[NAMEDATALEN];
	bool		seen;			/* in pg_database at the last look */
	DbStatus	status;
	int			slot;			/* index in erpcrm_cluster->slots, -1 none */
	BackgroundWorkerHandle *handle; /* NULL: adopted, or none */
	TimestampTz start_after;	/* not before this */
	int			failures;		/* starts in a row that never got going */
	bool		running;		/* a worker was started (or adopted) */
	TimestampTz unwanted_since; /* the settings stopped wanting it, or 0 */
	bool		refused;		/* no background worker slot was free */
	bool		refused_logged; /* the log said max_worker_processes */
	bool		recheck;		/* CREATE EXTENSION committed while its worker
								 * ran: if it found no erpcrm, look again */
} DbEntry;

static List *databases = NIL;	/* of DbEntry, in TopMemoryContext */

static ProcessUtility_hook_type prev_utility_hook = NULL;

void
erpcrm_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "erpcrm", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "erpcrm_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "erpcrm launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "erpcrm launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

static bool
restricted(void)
{
	return erpcrm_database != NULL && erpcrm_database[0] != '\0';
}

static void
set_launcher_detail(const char *detail)
{
	SpinLockAcquire(&erpcrm_cluster->mutex);
	strlcpy(erpcrm_cluster->launcher_detail, detail,
			sizeof(erpcrm_cluster->launcher_detail));
	SpinLockRelease(&erpcrm_cluster->mutex);
}

/* A new entry, kept across rounds (the list lives in TopMemoryContext). */
static DbEntry *
new_entry(Oid oid, DbStatus status)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	DbEntry    *e = palloc0(sizeof(DbEntry));

	e->oid = oid;
	e->status = status;
	e->slot = -1;
	databases = lappend(databases, e);
	MemoryContextSwitchTo(old);
	return e;
}

static DbEntry *
find_entry(Oid oid)
{
	ListCell   *lc;

	foreach(lc, databases)
	{
		DbEntry    *e = lfirst(lc);

		if (e->oid == oid)
			return e;
	}
	return NULL;
}

/*
 * Look at pg_database: every database that accepts connections and is no
 * template.  A heap scan, as autovacuum's launcher does: a process
 * connected to no database cannot always use pg_database's index.
 */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;

	foreach(lc, databases)
		((DbEntry *) lfirst(lc))->seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		DbEntry    *e;

		if (!db->datallowconn || db->datistemplate)
			continue;
		e = find_entry(db->oid);
		if (e == NULL)
			e = new_entry(db->oid, DB_UNKNOWN);
		strlcpy(e->name, NameStr(db->datname), NAMEDATALEN);
		e->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}

/*
 * The role erpcrm.role names: InvalidOid for the bootstrap superuser (the
 * setting is empty); *waiting set to why the launcher must wait, or NULL.
 */
static Oid
worker_role(const char **waiting)
{
	HeapTuple	tup;
	Oid			oid = InvalidOid;
	bool		can_login = false;
	bool		exists;
	MemoryContext caller = CurrentMemoryContext;

	*waiting = NULL;
	if (erpcrm_role == NULL || erpcrm_role[0] == '\0')
		return InvalidOid;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(erpcrm_role));
	exists = HeapTupleIsValid(tup);
	if (exists)
	{
		oid = ((Form_pg_authid) GETSTRUCT(tup))->oid;
		can_login = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
		ReleaseSysCache(tup);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	if (!exists)
		*waiting = psprintf("waiting for role \"%s\" (erpcrm.role) to be created", erpcrm_role);
	else if (!can_login)
		*waiting = psprintf("waiting for role \"%s\" (erpcrm.role) to have LOGIN", erpcrm_role);
	return oid;
}

static ErpcrmShared *
slot_of(DbEntry *e)
{
	return e->slot >= 0 ? &erpcrm_cluster->slots[e->slot] : NULL;
}

/* A free slot, marked in use for this database; NULL when none is free. */
static ErpcrmShared *
take_slot(DbEntry *e)
{
	for (int i = 0; i < erpcrm_cluster->nslots; i++)
	{
		ErpcrmShared *slot = &erpcrm_cluster->slots[i];

		SpinLockAcquire(&slot->mutex);
		if (slot->in_use)
		{
			SpinLockRelease(&slot->mutex);
			continue;
		}
		/* keep the mutex, clear the rest */
		memset((char *) slot + offsetof(ErpcrmShared, in_use), 0,
			   sizeof(ErpcrmShared) - offsetof(ErpcrmShared, in_use));
		slot->in_use = true;
		slot->database_oid = e->oid;
		strlcpy(slot->database_name, e->name, NAMEDATALEN);
		slot->window_remaining = -1;
		slot->daily_remaining = -1;
		slot->limiter = -1;
		SpinLockRelease(&slot->mutex);
		e->slot = i;
		return slot;
	}
	return NULL;
}

static void
free_slot(DbEntry *e)
{
	ErpcrmShared *slot = slot_of(e);

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->in_use = false;
	slot->worker_pid = 0;
	slot->worker_latch = NULL;
	SpinLockRelease(&slot->mutex);
	e->slot = -1;
	if (e->handle != NULL)
	{
		pfree(e->handle);
		e->handle = NULL;
	}
}

/* Stop the worker of this database, if one runs. */
static void
stop_worker(DbEntry *e)
{
	ErpcrmShared *slot = slot_of(e);
	pid_t		pid = 0;

	if (e->handle != NULL)
		TerminateBackgroundWorker(e->handle);
	else if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		pid = slot->worker_pid;
		SpinLockRelease(&slot->mutex);
		if (pid != 0)
			kill(pid, SIGTERM);
	}
}

/*
 * A worker the settings no longer want (erpcrm.database or erpcrm.role
 * changed, the role went): it leaves by itself when it reads the new
 * settings, as a worker always did; one that has not after a grace period
 * is stopped.
 */
static void
stop_unwanted(DbEntry *e, TimestampTz now)
{
	if (e->unwanted_since == 0)
		e->unwanted_since = now;
	else if (now - e->unwanted_since > (int64) UNWANTED_GRACE_MS * 1000)
		stop_worker(e);
}

/*
 * A worker whose subscription handler runs past erpcrm.handler_timeout and
 * a grace: the handler caught the cancel and went on (a loop with EXCEPTION
 * WHEN query_canceled or WHEN OTHERS), or runs code that never looks at
 * it.  It would hold its database's worker for ever: the worker is stopped
 * and started again at once, and the change, named in the slot, is parked by
 * the next worker instead of handed over again.
 */
static void
stop_stuck_handler(DbEntry *e, ErpcrmShared *slot, TimestampTz now)
{
	int			timeout_ms = erpcrm_handler_timeout_ms;
	int64		change;
	TimestampTz since;

	if (timeout_ms <= 0)
		return;
	SpinLockAcquire(&slot->mutex);
	change = slot->handler_change;
	since = slot->handler_since;
	if (change == 0 || since == 0 || slot->stuck_change == change ||
		now - since <= ((int64) timeout_ms + HANDLER_GRACE_MS) * 1000)
	{
		SpinLockRelease(&slot->mutex);
		return;
	}
	slot->stuck_change = change;
	slot->stuck_timeout_ms = timeout_ms;
	slot->restart_at_once = true;
	SpinLockRelease(&slot->mutex);
	ereport(LOG,
			(errmsg("erpcrm launcher: stopping the worker of database \"%s\": the handler of change " INT64_FORMAT " ran past erpcrm.handler_timeout (%d ms) and did not stop when cancelled",
					e->name, change, timeout_ms),
			 errdetail("The worker starts again at once and parks change " INT64_FORMAT " instead of handing it over again.", change),
			 errhint("A handler must not catch query_canceled and go on; fix it, then hand the change over again with erpcrm.requeue_change(" INT64_FORMAT ").", change)));
	stop_worker(e);
}

/* Is the worker of this entry still there? */
static bool
worker_alive(DbEntry *e)
{
	ErpcrmShared *slot = slot_of(e);
	pid_t		pid;

	if (e->handle != NULL)
		return GetBackgroundWorkerPid(e->handle, &pid) != BGWH_STOPPED;
	if (!e->running)
		return false;
	/* adopted from an earlier launcher: its pid is all there is */
	if (slot == NULL)
		return false;
	SpinLockAcquire(&slot->mutex);
	pid = slot->worker_pid;
	SpinLockRelease(&slot->mutex);
	return pid != 0 && kill(pid, 0) == 0;
}

static void
start_worker(DbEntry *e, Oid role)
{
	BackgroundWorker worker;
	ErpcrmShared *slot = slot_of(e);
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext old;
	bool		registered;

	if (slot == NULL)
	{
		slot = take_slot(e);
		if (slot == NULL)
			elog(ERROR, "erpcrm launcher: no slot left for database \"%s\"", e->name);
	}
	SpinLockAcquire(&slot->mutex);
	slot->role_oid = role;
	slot->database_oid = e->oid;
	strlcpy(slot->database_name, e->name, NAMEDATALEN);
	slot->probe = (e->status == DB_UNKNOWN);
	slot->no_extension = false;
	slot->restart_at_once = false;
	slot->started_at = 0;
	SpinLockRelease(&slot->mutex);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher does */
	strlcpy(worker.bgw_library_name, "erpcrm", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "erpcrm_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "erpcrm worker for database %s", e->name);
	strlcpy(worker.bgw_type, "erpcrm worker", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(e->slot);
	worker.bgw_notify_pid = MyProcPid;

	/* the handle outlives this round */
	old = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &e->handle);
	MemoryContextSwitchTo(old);
	if (!registered)
	{
		e->handle = NULL;
		e->refused = true;
		/* shown, even where erpcrm is not known to be yet */
		SpinLockAcquire(&slot->mutex);
		slot->probe = false;
		SpinLockRelease(&slot->mutex);
		e->start_after = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
		erpcrm_set_slot_state(slot, ERPCRM_WORKER_NOT_CONFIGURED,
							  psprintf("no background worker is free for this database: max_worker_processes (%d) is too small; raise it and restart the server",
									   max_worker_processes));
		if (!e->refused_logged)
		{
			ereport(LOG,
					(errmsg("erpcrm launcher cannot start a worker for database \"%s\": no background worker slot is free",
							e->name),
					 errdetail("max_worker_processes is %d.", max_worker_processes),
					 errhint("erpcrm needs one background worker for its launcher and one per database that has the extension, besides those of parallel queries, replication and other extensions: raise max_worker_processes and restart the server.")));
			e->refused_logged = true;
		}
		return;
	}
	e->refused = false;
	e->refused_logged = false;
	e->running = true;
	/* until it is going, it counts as a failed start */
	e->failures++;
	e->start_after = TimestampTzPlusMilliseconds(now,
												 Min((long) RESTART_DELAY_MS << Min(e->failures - 1, 10),
													 (long) MAX_RESTART_DELAY_MS));
}

/*
 * Take over the slots a previous launcher left in use (it died, its
 * workers did not): a live worker is kept, a stale slot freed.
 */
static void
adopt_slots(void)
{
	for (int i = 0; i < erpcrm_cluster->nslots; i++)
	{
		ErpcrmShared *slot = &erpcrm_cluster->slots[i];
		bool		in_use;
		pid_t		pid;
		Oid			db;
		DbEntry    *e;

		SpinLockAcquire(&slot->mutex);
		in_use = slot->in_use;
		pid = slot->worker_pid;
		db = slot->database_oid;
		if (in_use && (pid == 0 || kill(pid, 0) != 0 || !OidIsValid(db)))
		{
			slot->in_use = false;
			in_use = false;
		}
		SpinLockRelease(&slot->mutex);
		if (!in_use)
			continue;
		e = new_entry(db, DB_SERVED);
		e->slot = i;
		e->running = true;
		strlcpy(e->name, slot->database_name, NAMEDATALEN);
	}
}

/* What CREATE EXTENSION told us: look at those databases again. */
static void
take_probe_queue(void)
{
	Oid			queue[ERPCRM_PROBE_QUEUE];
	int			n;
	bool		all;
	ListCell   *lc;

	SpinLockAcquire(&erpcrm_cluster->mutex);
	n = erpcrm_cluster->nprobe;
	memcpy(queue, erpcrm_cluster->probe_queue, sizeof(Oid) * n);
	all = erpcrm_cluster->probe_all;
	erpcrm_cluster->nprobe = 0;
	erpcrm_cluster->probe_all = false;
	SpinLockRelease(&erpcrm_cluster->mutex);

	foreach(lc, databases)
	{
		DbEntry    *e = lfirst(lc);
		bool		again = all;

		for (int i = 0; i < n; i++)
			if (queue[i] == e->oid)
				again = true;
		if (again && e->running)
		{
			/*
			 * A worker looking for erpcrm may have looked before the
			 * CREATE EXTENSION committed (a database created just before):
			 * should it say "no extension", look again at once instead of
			 * in 10 minutes.
			 */
			e->recheck = true;
			continue;
		}
		if (e->status != DB_NO_EXTENSION)
			continue;
		if (again)
		{
			e->status = DB_UNKNOWN;
			e->start_after = 0;
			e->failures = 0;
		}
	}
}

/* Is this database kept free for a DROP, RENAME or TEMPLATE use? */
static bool
held(Oid db, TimestampTz now)
{
	bool		result;

	SpinLockAcquire(&erpcrm_cluster->mutex);
	result = erpcrm_cluster->hold_database == db && erpcrm_cluster->hold_until > now;
	SpinLockRelease(&erpcrm_cluster->mutex);
	return result;
}

/* The worker of e has stopped: what did it find, when to start again? */
static void
worker_stopped(DbEntry *e, TimestampTz now)
{
	ErpcrmShared *slot = slot_of(e);
	bool		no_ext;
	bool		at_once;
	bool		got_going;

	e->running = false;
	e->unwanted_since = 0;
	if (e->handle != NULL)
	{
		pfree(e->handle);
		e->handle = NULL;
	}
	SpinLockAcquire(&slot->mutex);
	no_ext = slot->no_extension;
	at_once = slot->restart_at_once;
	got_going = slot->started_at != 0 && !slot->probe;
	slot->started_at = 0;
	SpinLockRelease(&slot->mutex);

	if (no_ext)
	{
		e->status = e->recheck ? DB_UNKNOWN : DB_NO_EXTENSION;
		e->failures = 0;
		e->start_after = e->recheck ? 0 : TimestampTzPlusMilliseconds(now, REPROBE_MS);
		e->recheck = false;
		free_slot(e);
		return;
	}
	e->recheck = false;
	if (got_going)
	{
		e->failures = 0;
		e->start_after = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
	}
	/* else start_worker() set a growing delay */
	if (at_once)
		e->start_after = 0;
}

/*
 * The slot that stands for the database erpcrm.database names while it
 * does not exist, or NULL to drop it.
 */
static void
show_placeholder(const char *waiting, List **gone)
{
	ListCell   *lc;
	DbEntry    *placeholder = NULL;

	foreach(lc, databases)
	{
		DbEntry    *e = lfirst(lc);

		if (e->oid == InvalidOid)
			placeholder = e;
	}
	if (waiting == NULL)
	{
		if (placeholder != NULL)
		{
			free_slot(placeholder);
			*gone = lappend(*gone, placeholder);
		}
		return;
	}
	if (placeholder == NULL)
		placeholder = new_entry(InvalidOid, DB_SERVED);
	strlcpy(placeholder->name, erpcrm_database, NAMEDATALEN);
	if (placeholder->slot < 0 && take_slot(placeholder) == NULL)
		return;
	SpinLockAcquire(&slot_of(placeholder)->mutex);
	strlcpy(slot_of(placeholder)->database_name, erpcrm_database, NAMEDATALEN);
	SpinLockRelease(&slot_of(placeholder)->mutex);
	erpcrm_set_slot_state(slot_of(placeholder), ERPCRM_WORKER_NOT_CONFIGURED, waiting);
}

/* One look at databases and workers. */
static void
launcher_round(void)
{
	const char *waiting;
	Oid			role;
	ListCell   *lc;
	TimestampTz now;
	int			wanted = 0;
	int			refused = 0;
	bool		found = false;
	List	   *gone = NIL;

	scan_databases();
	take_probe_queue();
	role = worker_role(&waiting);
	now = GetCurrentTimestamp();

	foreach(lc, databases)
	{
		DbEntry    *e = lfirst(lc);
		ErpcrmShared *slot;
		bool		want;

		if (e->oid == InvalidOid)
			continue;			/* the placeholder: below */
		if (e->running && !worker_alive(e))
			worker_stopped(e, now);
		slot = slot_of(e);
		if (e->status == DB_NO_EXTENSION && now >= e->start_after)
			e->status = DB_UNKNOWN;		/* look again */

		if (restricted())
		{
			want = e->seen && strcmp(e->name, erpcrm_database) == 0;
			if (want)
			{
				e->status = DB_SERVED;
				found = true;
			}
		}
		else
			want = e->seen && e->status != DB_NO_EXTENSION;
		if (want && held(e->oid, now))
			want = false;

		if (!want || waiting != NULL)
		{
			if (e->running)
				stop_unwanted(e, now);
			else if (want && restricted())
			{
				/* no worker can connect yet: the slot says why */
				if (slot != NULL || take_slot(e) != NULL)
					erpcrm_set_slot_state(slot_of(e), ERPCRM_WORKER_NOT_CONFIGURED, waiting);
			}
			else
			{
				free_slot(e);
				if (!e->seen)
					gone = lappend(gone, e);
			}
			continue;
		}

		if (e->status == DB_SERVED)
			wanted++;
		if (e->running)
		{
			bool		going;

			SpinLockAcquire(&slot->mutex);
			going = slot->started_at != 0 && !slot->probe;
			SpinLockRelease(&slot->mutex);
			if (going)
			{
				e->status = DB_SERVED;
				e->failures = 0;
			}
			/* started as another role than erpcrm.role names now */
			if (slot->role_oid != role)
				stop_unwanted(e, now);
			else
				e->unwanted_since = 0;
			stop_stuck_handler(e, slot, now);
			continue;
		}
		if (now >= e->start_after)
			start_worker(e, role);
		if (e->refused)
			refused++;
	}

	/* erpcrm.database names a database that does not exist (yet) */
	if (restricted() && !found)
		show_placeholder(waiting ? waiting :
						 psprintf("waiting for database \"%s\" (erpcrm.database) to be created",
								  erpcrm_database), &gone);
	else
		show_placeholder(NULL, &gone);

	foreach(lc, gone)
	{
		DbEntry    *e = lfirst(lc);

		databases = list_delete_ptr(databases, e);
		pfree(e);
	}
	list_free(gone);

	SpinLockAcquire(&erpcrm_cluster->mutex);
	erpcrm_cluster->wanted = wanted;
	erpcrm_cluster->refused = refused;
	SpinLockRelease(&erpcrm_cluster->mutex);
	set_launcher_detail(waiting != NULL && !restricted() ? waiting : "");
}

static void
launcher_exit(int code, Datum arg)
{
	SpinLockAcquire(&erpcrm_cluster->mutex);
	erpcrm_cluster->launcher_pid = 0;
	erpcrm_cluster->launcher_latch = NULL;
	SpinLockRelease(&erpcrm_cluster->mutex);
}

void
erpcrm_launcher_main(Datum main_arg)
{
	MemoryContext round_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(launcher_exit, (Datum) 0);
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("erpcrm launcher");

	SpinLockAcquire(&erpcrm_cluster->mutex);
	erpcrm_cluster->launcher_pid = MyProcPid;
	erpcrm_cluster->launcher_latch = MyLatch;
	erpcrm_cluster->launcher_started_at = GetCurrentTimestamp();
	SpinLockRelease(&erpcrm_cluster->mutex);

	adopt_slots();
	round_cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm launcher",
									  ALLOCSET_DEFAULT_SIZES);
	ereport(LOG,
			(errmsg("erpcrm launcher started"),
			 restricted() ?
			 errdetail("erpcrm.database restricts delivery to database \"%s\".", erpcrm_database) :
			 errdetail("Every database that has the extension gets a worker.")));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(round_cxt);
		MemoryContextSwitchTo(round_cxt);
		launcher_round();
		MemoryContextSwitchTo(TopMemoryContext);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------
 * Statements that need a database free of connections
 * ----------------------------------------------------------------
 */

/*
 * Stop the worker of the named database and keep the launcher off it for a
 * while, so that DROP DATABASE, ALTER DATABASE ... RENAME and
 * CREATE DATABASE ... TEMPLATE do not find it connected.
 */
static void
free_database_oid(Oid db)
{
	ErpcrmShared *slot;
	pid_t		pid = 0;
	Latch	   *latch;

	if (erpcrm_cluster == NULL || !OidIsValid(db))
		return;
	SpinLockAcquire(&erpcrm_cluster->mutex);
	erpcrm_cluster->hold_database = db;
	erpcrm_cluster->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HOLD_MS);
	latch = erpcrm_cluster->launcher_latch;
	SpinLockRelease(&erpcrm_cluster->mutex);

	slot = erpcrm_slot_for_database(db, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		pid = slot->worker_pid;
		SpinLockRelease(&slot->mutex);
	}
	if (pid != 0)
	{
		kill(pid, SIGTERM);
		/* PostgreSQL waits 5 s for other sessions to leave: so do we */
		for (int i = 0; i < 500; i++)
		{
			pid_t		now_pid;

			SpinLockAcquire(&slot->mutex);
			now_pid = slot->worker_pid;
			SpinLockRelease(&slot->mutex);
			if (now_pid != pid)
				break;
			CHECK_FOR_INTERRUPTS();
			pg_usleep(10000L);
		}
	}
	if (latch != NULL)
		SetLatch(latch);
}

static void
free_database(const char *name)
{
	if (name != NULL && erpcrm_cluster != NULL)
		free_database_oid(get_database_oid(name, true));
}

static void
release_database(void)
{
	if (erpcrm_cluster == NULL)
		return;
	SpinLockAcquire(&erpcrm_cluster->mutex);
	/* the launcher looks again in a second (a failed DROP keeps it) */
	if (erpcrm_cluster->hold_until > 0)
		erpcrm_cluster->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	SpinLockRelease(&erpcrm_cluster->mutex);
}

static void
erpcrm_utility_hook(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		freed = false;

	if (IsA(parsetree, DropdbStmt))
	{
		free_database(((DropdbStmt *) parsetree)->dbname);
		freed = true;
	}
	else if (IsA(parsetree, RenameStmt) &&
			 ((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
	{
		free_database(((RenameStmt *) parsetree)->subname);
		freed = true;
	}
	else if (IsA(parsetree, DropStmt) &&
			 ((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION)
	{
		ListCell   *lc;

		/* DROP EXTENSION erpcrm: the worker's locks would deadlock with it */
		foreach(lc, ((DropStmt *) parsetree)->objects)
		{
			if (strcmp(strVal(lfirst(lc)), "erpcrm") == 0)
			{
				free_database_oid(MyDatabaseId);
				freed = true;
			}
		}
	}
	else if (IsA(parsetree, CreatedbStmt))
	{
		ListCell   *lc;

		foreach(lc, ((CreatedbStmt *) parsetree)->options)
		{
			DefElem    *d = lfirst(lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
			{
				free_database(defGetString(d));
				freed = true;
			}
		}
	}

	/* owners of erpcrm's objects (extension/roles.c) */
	erpcrm_roles_before(parsetree);
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	erpcrm_roles_after(parsetree);
	if (freed)
		release_database();
}

void
erpcrm_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = erpcrm_utility_hook;
}

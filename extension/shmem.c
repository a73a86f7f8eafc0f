/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared state of the launcher and of one slot per delivery worker:
 *	  its latch (so that a commit that wrote the outbox wakes it at once),
 *	  what it is doing, and its counters, read by the erpcrm.worker view (the
 *	  worker of the current database) and erpcrm.workers (all of them).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "commands/dbcommands.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

#include "erpcrm.h"

ErpcrmCluster *erpcrm_cluster = NULL;
ErpcrmShared *erpcrm_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* What this backend's transaction asks for at commit (ERPCRM_AT_COMMIT_*). */
static int	at_commit = 0;
static bool xact_callback_registered = false;

/* One slot per background worker process the server can run. */
static Size
cluster_size(void)
{
	return add_size(offsetof(ErpcrmCluster, slots),
					mul_size(sizeof(ErpcrmShared), max_worker_processes));
}

static void
erpcrm_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(cluster_size()));
	RequestAddinShmemSpace(MAXALIGN(erpcrm_limiters_shmem_size()));
	erpcrm_limiters_shmem_request();
}

static void
erpcrm_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	erpcrm_cluster = ShmemInitStruct("erpcrm", cluster_size(), &found);
	if (!found)
	{
		memset(erpcrm_cluster, 0, cluster_size());
		SpinLockInit(&erpcrm_cluster->mutex);
		erpcrm_cluster->nslots = max_worker_processes;
		for (int i = 0; i < erpcrm_cluster->nslots; i++)
		{
			SpinLockInit(&erpcrm_cluster->slots[i].mutex);
			erpcrm_cluster->slots[i].limiter = -1;
		}
	}
	erpcrm_limiters_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
erpcrm_request_shmem(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = erpcrm_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = erpcrm_shmem_startup;
}

/*
 * Wake this database's worker; with portal_changed, it reads erpcrm.portal
 * again first.
 */
static void
wake_worker(bool portal_changed, bool asked)
{
	ErpcrmShared *slot = erpcrm_slot_for_database(MyDatabaseId, false);
	Latch	   *latch = NULL;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (slot->database_oid == MyDatabaseId)
	{
		if (portal_changed)
			slot->portal_changed = true;
		/*
		 * The worker folds again only when wakes moved, and looks at the
		 * pulls (subscriptions, inbox) again only when asks did: the ERP's
		 * own commits (capture.c) have nothing for them.
		 */
		slot->wakes++;
		if (asked)
			slot->asks++;
		latch = slot->worker_latch;
	}
	SpinLockRelease(&slot->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * The one transaction callback: at COMMIT it does what the transaction
 * asked for; at ABORT it forgets it.
 */
static void
at_commit_callback(XactEvent event, void *arg)
{
	int			what = at_commit;

	if (what == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			at_commit = 0;
			if (erpcrm_cluster == NULL)
				break;
			if (what & (ERPCRM_AT_COMMIT_WAKE | ERPCRM_AT_COMMIT_PORTAL))
				wake_worker((what & ERPCRM_AT_COMMIT_PORTAL) != 0,
							(what & (ERPCRM_AT_COMMIT_ASKED | ERPCRM_AT_COMMIT_PORTAL)) != 0);
			if (what & ERPCRM_AT_COMMIT_LAUNCHER)
				erpcrm_notify_launcher(MyDatabaseId);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			at_commit = 0;
			break;
		default:
			break;
	}
}

/*
 * Ask for what (ERPCRM_AT_COMMIT_*) at the commit of the current
 * transaction: nothing happens if it aborts.  Called on the trigger path:
 * costs a flag test after the first call.
 */
void
erpcrm_at_commit(int what)
{
	if ((at_commit & what) == what)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(at_commit_callback, NULL);
		xact_callback_registered = true;
	}
	at_commit |= what;
}

/*
 * The slot of the worker serving dboid, or NULL.  With fallback, while
 * erpcrm.database restricts delivery to one database, the slot of that
 * database's worker (from any database, as before there was a launcher).
 */
ErpcrmShared *
erpcrm_slot_for_database(Oid dboid, bool fallback)
{
	ErpcrmShared *other = NULL;

	if (erpcrm_cluster == NULL)
		return NULL;
	for (int i = 0; i < erpcrm_cluster->nslots; i++)
	{
		ErpcrmShared *slot = &erpcrm_cluster->slots[i];
		bool		in_use;
		bool		probe;
		Oid			db;

		SpinLockAcquire(&slot->mutex);
		in_use = slot->in_use;
		probe = slot->probe;
		db = slot->database_oid;
		SpinLockRelease(&slot->mutex);
		if (!in_use || probe)
			continue;
		if (db == dboid)
			return slot;
		if (other == NULL)
			other = slot;
	}
	if (fallback && erpcrm_database != NULL && erpcrm_database[0] != '\0')
		return other;
	return NULL;
}

/*
 * strlcpy that never cuts a UTF-8 character in two: what lands in these
 * buffers is shown in SQL.
 */
void
erpcrm_clip(char *dst, const char *src, size_t size)
{
	int			len = strlen(src);

	if ((size_t) len >= size)
		len = pg_encoding_mbcliplen(PG_UTF8, src, len, (int) size - 1);
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * Set a slot's state and detail (the launcher, for a database it cannot
 * serve yet).
 */
void
erpcrm_set_slot_state(ErpcrmShared *slot, ErpcrmWorkerState state,
					  const char *detail)
{
	ErpcrmShared *saved = erpcrm_shared;

	erpcrm_shared = slot;
	erpcrm_set_state(state, detail);
	erpcrm_shared = saved;
}

void
erpcrm_set_state(ErpcrmWorkerState state, const char *detail)
{
	if (erpcrm_shared == NULL)
		return;
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->state = state;
	/* backoff_until is shown only while the worker is held back */
	if (state != ERPCRM_WORKER_BACKING_OFF && state != ERPCRM_WORKER_RATE_LIMITED &&
		state != ERPCRM_WORKER_AUTH_FAILED)
		erpcrm_shared->backoff_until = 0;
	erpcrm_clip(erpcrm_shared->detail, detail ? detail : "",
				sizeof(erpcrm_shared->detail));
	SpinLockRelease(&erpcrm_shared->mutex);
}

/*
 * A session (check_connection(), setup_hubspot()) starts a call to HubSpot:
 * HubSpot counts it against the same budget, so the worker's limiter must
 * count it too.  It also counts in erpcrm.worker.calls.
 */
void
erpcrm_note_session_call(TimestampTz started)
{
	ErpcrmShared *slot = erpcrm_slot_for_database(MyDatabaseId, false);

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->session_calls[slot->session_seq % ERPCRM_SESSION_CALLS] = started;
	slot->session_seq++;
	slot->calls++;
	slot->last_call = started;
	SpinLockRelease(&slot->mutex);
}

/*
 * The worker takes the session calls it has not seen yet (at most
 * ERPCRM_SESSION_CALLS, oldest first) into calls[]; returns how many.
 */
int
erpcrm_take_session_calls(uint64 *seen, TimestampTz *calls)
{
	int			n = 0;
	uint64		seq;

	if (erpcrm_shared == NULL)
		return 0;
	SpinLockAcquire(&erpcrm_shared->mutex);
	seq = erpcrm_shared->session_seq;
	if (*seen + ERPCRM_SESSION_CALLS < seq)
		*seen = seq - ERPCRM_SESSION_CALLS;
	for (; *seen < seq; (*seen)++)
		calls[n++] = erpcrm_shared->session_calls[*seen % ERPCRM_SESSION_CALLS];
	SpinLockRelease(&erpcrm_shared->mutex);
	return n;
}

static const char *
state_name(ErpcrmWorkerState state)
{
	switch (state)
	{
		case ERPCRM_WORKER_STOPPED:
			return "stopped";
		case ERPCRM_WORKER_STARTING:
			return "starting";
		case ERPCRM_WORKER_IDLE:
			return "idle";
		case ERPCRM_WORKER_SENDING:
			return "sending";
		case ERPCRM_WORKER_BACKING_OFF:
			return "backing off";
		case ERPCRM_WORKER_RATE_LIMITED:
			return "rate limited";
		case ERPCRM_WORKER_PAUSED:
			return "paused";
		case ERPCRM_WORKER_AUTH_FAILED:
			return "auth failed";
		case ERPCRM_WORKER_NOT_CONFIGURED:
			return "not configured";
		case ERPCRM_WORKER_STANDBY:
			return "standby";
	}
	return "unknown";
}

PG_FUNCTION_INFO_V1(erpcrm_wake_v1);
Datum
erpcrm_wake_v1(PG_FUNCTION_ARGS)
{
	erpcrm_at_commit(ERPCRM_AT_COMMIT_WAKE | ERPCRM_AT_COMMIT_ASKED);
	PG_RETURN_BOOL(erpcrm_cluster != NULL);
}

/*
 * erpcrm.retry_now(): end any back-off of the worker (a failed cycle, a
 * transport failure, a 401/403) and wake it, as a reload does.  Returns
 * whether a worker was there to wake.
 */
PG_FUNCTION_INFO_V1(erpcrm_retry_now_v1);
Datum
erpcrm_retry_now_v1(PG_FUNCTION_ARGS)
{
	Latch	   *latch;
	ErpcrmShared *slot = erpcrm_slot_for_database(MyDatabaseId, true);

	if (slot == NULL)
		PG_RETURN_BOOL(false);
	SpinLockAcquire(&slot->mutex);
	slot->retry_now = true;
	latch = slot->worker_latch;
	SpinLockRelease(&slot->mutex);
	if (latch != NULL)
		SetLatch(latch);
	PG_RETURN_BOOL(latch != NULL);
}

PG_FUNCTION_INFO_V1(erpcrm_caller_v1);
Datum
erpcrm_caller_v1(PG_FUNCTION_ARGS)
{
	/* the role that asks: see erpcrm_asking_role() */
	PG_RETURN_OID(erpcrm_asking_role());
}

/*
 * One row of erpcrm.worker / erpcrm.workers from a copy of a slot (NULL:
 * no worker serves this database).
 */
#define WORKER_COLS 13
static void
worker_row(ErpcrmShared *snap, Datum *values, bool *nulls)
{
	char	   *dbname = NULL;

	memset(nulls, 0, sizeof(bool) * WORKER_COLS);
	if (snap == NULL)
	{
		for (int i = 0; i < WORKER_COLS; i++)
			nulls[i] = true;
		dbname = get_database_name(MyDatabaseId);
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(dbname ? dbname : ""));
		nulls[1] = false;
		values[2] = CStringGetTextDatum("stopped");
		nulls[2] = false;
		if (erpcrm_cluster->launcher_pid == 0)
			values[3] = CStringGetTextDatum("the erpcrm launcher is not running");
		else if (erpcrm_cluster->launcher_detail[0] != '\0')
		{
			char		detail[sizeof(erpcrm_cluster->launcher_detail)];

			SpinLockAcquire(&erpcrm_cluster->mutex);
			strlcpy(detail, erpcrm_cluster->launcher_detail, sizeof(detail));
			SpinLockRelease(&erpcrm_cluster->mutex);
			values[3] = CStringGetTextDatum(detail);
			values[2] = CStringGetTextDatum("not configured");
		}
		else if (erpcrm_database != NULL && erpcrm_database[0] != '\0')
			values[3] = CStringGetTextDatum(psprintf("erpcrm.database restricts delivery to database \"%s\"",
													 erpcrm_database));
		else
			values[3] = CStringGetTextDatum("no worker serves this database yet");
		nulls[3] = false;
		return;
	}

	values[0] = Int32GetDatum(snap->worker_pid);
	nulls[0] = (snap->worker_pid == 0);
	if (OidIsValid(snap->database_oid))
		dbname = get_database_name(snap->database_oid);
	values[1] = DirectFunctionCall1(namein,
									CStringGetDatum(dbname ? dbname : snap->database_name));
	values[2] = CStringGetTextDatum(state_name(snap->state));
	values[3] = CStringGetTextDatum(snap->detail);
#define TS(i, v) do { values[i] = TimestampTzGetDatum(v); nulls[i] = ((v) == 0); } while (0)
	TS(4, snap->started_at);
	TS(5, snap->last_wake);
	TS(6, snap->last_call);
	TS(7, snap->backoff_until);
#undef TS
	values[8] = Int64GetDatum(snap->window_remaining);
	nulls[8] = snap->window_remaining < 0;
	values[9] = Int64GetDatum(snap->daily_remaining);
	nulls[9] = snap->daily_remaining < 0;
	values[10] = Int64GetDatum((int64) snap->calls);
	values[11] = Int64GetDatum((int64) snap->rate_limited);
	values[12] = Int64GetDatum((int64) snap->objects_sent);
}

PG_FUNCTION_INFO_V1(erpcrm_worker_state_v1);
Datum
erpcrm_worker_state_v1(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[WORKER_COLS];
	bool		nulls[WORKER_COLS];
	ErpcrmShared *slot;
	ErpcrmShared snap;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (erpcrm_cluster == NULL)
	{
		for (int i = 0; i < WORKER_COLS; i++)
			nulls[i] = true;
		values[2] = CStringGetTextDatum("not loaded");
		nulls[2] = false;
		values[3] = CStringGetTextDatum("erpcrm is not in shared_preload_libraries; changes are captured but not delivered");
		nulls[3] = false;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	slot = erpcrm_slot_for_database(MyDatabaseId, true);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		memcpy(&snap, slot, sizeof(snap));
		SpinLockRelease(&slot->mutex);
	}
	worker_row(slot ? &snap : NULL, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * erpcrm._workers(): every database the launcher serves or means to serve,
 * for erpcrm.workers (superusers only: it names every database).
 */
PG_FUNCTION_INFO_V1(erpcrm_workers_v1);
Datum
erpcrm_workers_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	workerdesc;
	Datum		values[WORKER_COLS];
	bool		nulls[WORKER_COLS];

	InitMaterializedSRF(fcinfo, 0);
	if (erpcrm_cluster == NULL)
		return (Datum) 0;
	/* each row is a row of erpcrm.worker, and the worker's limiter */
	workerdesc = lookup_rowtype_tupdesc_copy(TupleDescAttr(rsinfo->setDesc, 0)->atttypid, -1);
	for (int i = 0; i < erpcrm_cluster->nslots; i++)
	{
		ErpcrmShared *slot = &erpcrm_cluster->slots[i];
		ErpcrmShared snap;
		Datum		row[4];
		bool		rownulls[4] = {false, false, false, false};

		SpinLockAcquire(&slot->mutex);
		memcpy(&snap, slot, sizeof(snap));
		SpinLockRelease(&slot->mutex);
		if (!snap.in_use || snap.probe)
			continue;
		worker_row(&snap, values, nulls);
		row[0] = HeapTupleGetDatum(heap_form_tuple(workerdesc, values, nulls));
		/* which databases share a rate limiter (one per HubSpot token) */
		row[1] = Int32GetDatum(snap.limiter);
		rownulls[1] = snap.limiter < 0;
		/* the API family it calls, as check_connection() says, until it has one */
		if (snap.api_version[0] != '\0')
		{
			row[2] = CStringGetTextDatum(snap.api_version);
			row[3] = CStringGetTextDatum(snap.own_api_version ? "erpcrm.portal" : "erpcrm.api_version");
		}
		rownulls[2] = rownulls[3] = snap.api_version[0] == '\0';
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, rownulls);
	}
	return (Datum) 0;
}

/*
 * erpcrm._launcher_notify(): called by the install and update scripts, so
 * that the launcher starts a worker for this database as soon as the
 * CREATE EXTENSION commits (it looks again at the database then).
 */
void
erpcrm_notify_launcher(Oid dboid)
{
	Latch	   *latch;

	if (erpcrm_cluster == NULL)
		return;
	SpinLockAcquire(&erpcrm_cluster->mutex);
	if (erpcrm_cluster->nprobe < ERPCRM_PROBE_QUEUE)
		erpcrm_cluster->probe_queue[erpcrm_cluster->nprobe++] = dboid;
	else
		erpcrm_cluster->probe_all = true;
	latch = erpcrm_cluster->launcher_latch;
	SpinLockRelease(&erpcrm_cluster->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

PG_FUNCTION_INFO_V1(erpcrm_launcher_notify_v1);
Datum
erpcrm_launcher_notify_v1(PG_FUNCTION_ARGS)
{
	erpcrm_at_commit(ERPCRM_AT_COMMIT_LAUNCHER);
	PG_RETURN_BOOL(erpcrm_cluster != NULL);
}

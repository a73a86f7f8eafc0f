/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The worker's shared state: its latch (so that a commit that wrote the
 *	  outbox wakes it at once), what it is doing, and its counters, read by
 *	  the erpcrm.worker view.
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

#include "erpcrm.h"

ErpcrmShared *erpcrm_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend's transaction wrote the outbox: wake the worker at commit. */
static bool wake_pending = false;
static bool xact_callback_registered = false;

static void
erpcrm_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ErpcrmShared)));
}

static void
erpcrm_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	erpcrm_shared = ShmemInitStruct("erpcrm", sizeof(ErpcrmShared), &found);
	if (!found)
	{
		memset(erpcrm_shared, 0, sizeof(ErpcrmShared));
		SpinLockInit(&erpcrm_shared->mutex);
		erpcrm_shared->window_remaining = -1;
		erpcrm_shared->daily_remaining = -1;
	}
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

static void
erpcrm_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending && erpcrm_shared != NULL)
			{
				Latch	   *latch = NULL;

				SpinLockAcquire(&erpcrm_shared->mutex);
				if (erpcrm_shared->database_oid == MyDatabaseId)
					latch = erpcrm_shared->worker_latch;
				SpinLockRelease(&erpcrm_shared->mutex);
				if (latch != NULL)
					SetLatch(latch);
			}
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * Called on the trigger path: costs a flag test after the first call.
 */
void
erpcrm_wake_at_commit(void)
{
	if (wake_pending)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(erpcrm_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
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
	if (erpcrm_shared == NULL)
		return;
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->session_calls[erpcrm_shared->session_seq % ERPCRM_SESSION_CALLS] = started;
	erpcrm_shared->session_seq++;
	erpcrm_shared->calls++;
	erpcrm_shared->last_call = started;
	SpinLockRelease(&erpcrm_shared->mutex);
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
	erpcrm_wake_at_commit();
	PG_RETURN_BOOL(erpcrm_shared != NULL);
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

	if (erpcrm_shared == NULL)
		PG_RETURN_BOOL(false);
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->retry_now = true;
	latch = erpcrm_shared->worker_latch;
	SpinLockRelease(&erpcrm_shared->mutex);
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

PG_FUNCTION_INFO_V1(erpcrm_worker_state_v1);
Datum
erpcrm_worker_state_v1(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[13];
	bool		nulls[13];
	ErpcrmShared snap;
	char	   *dbname;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	memset(nulls, 0, sizeof(nulls));
	if (erpcrm_shared == NULL)
	{
		for (int i = 0; i < 13; i++)
			nulls[i] = true;
		values[2] = CStringGetTextDatum("not loaded");
		nulls[2] = false;
		values[3] = CStringGetTextDatum("erpcrm is not in shared_preload_libraries; changes are captured but not delivered");
		nulls[3] = false;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	SpinLockAcquire(&erpcrm_shared->mutex);
	memcpy(&snap, erpcrm_shared, sizeof(snap));
	SpinLockRelease(&erpcrm_shared->mutex);

	values[0] = Int32GetDatum(snap.worker_pid);
	nulls[0] = (snap.worker_pid == 0);
	dbname = OidIsValid(snap.database_oid) ? get_database_name(snap.database_oid) : NULL;
	if (dbname)
		values[1] = CStringGetDatum(dbname);
	else
		values[1] = CStringGetDatum(erpcrm_database ? erpcrm_database : "");
	values[1] = DirectFunctionCall1(namein, values[1]);
	values[2] = CStringGetTextDatum(state_name(snap.state));
	values[3] = CStringGetTextDatum(snap.detail);
#define TS(i, v) do { values[i] = TimestampTzGetDatum(v); nulls[i] = ((v) == 0); } while (0)
	TS(4, snap.started_at);
	TS(5, snap.last_wake);
	TS(6, snap.last_call);
	TS(7, snap.backoff_until);
#undef TS
	values[8] = Int64GetDatum(snap.window_remaining);
	nulls[8] = snap.window_remaining < 0;
	values[9] = Int64GetDatum(snap.daily_remaining);
	nulls[9] = snap.daily_remaining < 0;
	values[10] = Int64GetDatum((int64) snap.calls);
	values[11] = Int64GetDatum((int64) snap.rate_limited);
	values[12] = Int64GetDatum((int64) snap.objects_sent);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

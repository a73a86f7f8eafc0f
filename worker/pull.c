/*-------------------------------------------------------------------------
 *
 * pull.c
 *	  The way back: the worker pulls the changes of each subscription from
 *	  HubSpot's search API, oldest first from the subscription's cursor, and
 *	  gives each answer to erpcrm._receive(), which lands the changes in
 *	  erpcrm.inbox and moves the cursor, in one transaction: a crash before
 *	  its commit leaves the cursor where it was, and the same changes are
 *	  read again.  The changes landed are then handed to the subscription's
 *	  handler in a transaction of their own (erpcrm._hand_over_pending()),
 *	  so that a handler the launcher has to stop (it ran past
 *	  erpcrm.handler_timeout and caught the cancel) leaves its change in the
 *	  inbox, where the next worker parks it (park_stuck()).
 *
 *	  HubSpot allows four search calls a second (each of erpcrm's searches,
 *	  these and the others, takes its turn: hs_rate_search_slot), 200
 *	  results a page and 10,000 a query.  Every request starts at
 *	  the cursor (erpcrm._pull_request builds it), so no query pages past its
 *	  first page, and a millisecond holding more changes than a page is read
 *	  by object id.  The calls count in the worker's rate limiter, which
 *	  delivery shares; while deliveries wait, pulls use at most
 *	  erpcrm.pull_share of it.
 *
 *	  A subscription that reads associations reads them for the objects of
 *	  each answer with HubSpot's v4 batch/read, one call per target type,
 *	  before the answer is handed over: those calls count in the same
 *	  budget and share, and a page starts only when all its calls fit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "activity.h"
#include "kept.h"
#include "client.h"
#include "erpcrm.h"
#include "hubspot.h"
#include "subscribe.h"

#define PULL_WINDOW_MS			10000
#define PULL_RING				256
/* inbox rows past their retention deleted per round, at most */
#define PRUNE_STEP				1000

static TimestampTz search_blocked_until = 0;

/* park_stuck() parked the stuck change in the step now running */
static bool stuck_parked = false;

/* the starts of recent pull calls, for erpcrm.pull_share */
static TimestampTz pull_calls[PULL_RING];
static int	pull_next = 0;

typedef struct DueSubscription
{
	int32		id;
	char	   *name;
	char	   *object_type;
	bool		pull;
	int			nassoc;			/* association types each change carries */
	char	  **assoc;
} DueSubscription;

static bool may_call(long *wait_ms);

/*
 * Calls of pulls started in the last 10 s, and a little more: HubSpot
 * counts a call when it arrives, a little after it started.
 */
#define PULL_WINDOW_MARGIN_MS	100

static int
recent_pull_calls(TimestampTz now, TimestampTz *oldest)
{
	int			n = 0;

	*oldest = 0;
	for (int i = 0; i < PULL_RING; i++)
		if (pull_calls[i] != 0 &&
			now - pull_calls[i] < (PULL_WINDOW_MS + PULL_WINDOW_MARGIN_MS) * (int64) 1000)
		{
			if (*oldest == 0 || pull_calls[i] < *oldest)
				*oldest = pull_calls[i];
			n++;
		}
	return n;
}

/*
 * May a search call start now?  Waits short delays out; returns false with
 * *wait_ms set when the pulls must give way (their share is used, HubSpot
 * asked for a pause, the budget is spent for a while).
 */
static bool
may_search(bool outbound_busy, int ncalls, long *wait_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	long		delay;

	if (search_blocked_until > now)
	{
		*wait_ms = (long) ((search_blocked_until - now) / 1000) + 1;
		return false;
	}
	if (outbound_busy)
	{
		int			allowed = erpcrm_max_calls_per_10s * erpcrm_pull_share / 100;
		TimestampTz oldest;

		if (allowed < 1)
		{
			*wait_ms = erpcrm_pull_interval_ms;
			return false;		/* no share: pulls wait for deliveries */
		}
		/* a page's calls fit in the share (a share smaller than a page: one at a time) */
		if (recent_pull_calls(now, &oldest) + Min(ncalls, allowed) > allowed)
		{
			*wait_ms = (long) ((oldest + (PULL_WINDOW_MS + PULL_WINDOW_MARGIN_MS) * (int64) 1000 - now) / 1000) + 1;
			return false;
		}
	}
	/* every search of the portal takes its turn (four a second) */
	delay = hs_rate_search_slot(now);
	if (delay > 0)
		erpcrm_worker_sleep(delay, PG_WAIT_EXTENSION);
	return may_call(wait_ms);
}

/*
 * May any pull call start now, as the rate limiter sees it?  Waits a short
 * delay out; false with *wait_ms set when the window is spent for longer.
 */
static bool
may_call(long *wait_ms)
{
	TimestampTz now;
	long		delay;

	erpcrm_worker_absorb_session_calls();
	now = GetCurrentTimestamp();
	delay = hs_rate_delay_ms(now);
	if (delay > 1000)
	{
		*wait_ms = delay;
		return false;
	}
	if (delay > 0)
	{
		erpcrm_set_state(ERPCRM_WORKER_RATE_LIMITED, "waiting for the rate limit window");
		erpcrm_worker_sleep(delay, PG_WAIT_EXTENSION);
	}
	return true;
}

/*
 * One call of a pull (a search, or a read of associations), counted in the
 * limiter, in the pulls' share and in erpcrm.worker.
 */
static void
pull_call(const char *path, const char *body, HsResponse *resp, TimestampTz *called_at)
{
	TimestampTz now = GetCurrentTimestamp();

	erpcrm_set_state(ERPCRM_WORKER_SENDING, path);
	pgstat_report_activity(STATE_RUNNING, psprintf("erpcrm: POST %s (pulling changes)", path));
	*called_at = now;
	pull_calls[pull_next] = now;
	pull_next = (pull_next + 1) % PULL_RING;
	hs_rate_note_call(now);
	hs_http_request("POST", path, body, resp);
	if (resp->aborted)
		CHECK_FOR_INTERRUPTS();
	now = GetCurrentTimestamp();
	hs_rate_note_response(resp, now);
	erpcrm_worker_note_call(resp, resp->transport_error == 0 && resp->status == 429);

	if (resp->transport_error == 0 && resp->status == 429)
	{
		HsError		err;

		hs_parse_error(resp->body, resp->body_len, &err);
		if (err.policy_name != NULL && strcmp(err.policy_name, "SECONDLY") != 0 &&
			err.policy_name[0] != '\0')
			search_blocked_until = hs_rate_note_429(resp, err.policy_name, now);
		else
			search_blocked_until = TimestampTzPlusMilliseconds(now,
															   resp->retry_after_ms > 0 ?
															   resp->retry_after_ms : 1000);
	}
}

/*
 * What went wrong with the answer of a pull call (what: "search"), in
 * words; NULL: it is usable (a batch/read answers 207 when some objects
 * have no association).
 */
static char *
pull_problem(const char *what, const HsResponse *resp)
{
	HsError		err;

	if (resp->transport_error != 0)
		return psprintf("HubSpot's %s did not answer: %s", what, resp->transport_message);
	if (resp->status == 200 || (resp->status == 207 && strcmp(what, "search") != 0))
		return NULL;
	hs_parse_error(resp->body, resp->body_len, &err);
	return psprintf("HubSpot's %s answered %ld%s%s%s%s", what, resp->status,
					err.category[0] ? " " : "", err.category,
					err.message[0] ? ": " : "", err.message);
}

static void
pull_failed(int32 sub_id, const char *why)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		args[2];

	args[0] = Int32GetDatum(sub_id);
	args[1] = CStringGetTextDatum(why);
	if (erpcrm_execute_kept("SELECT erpcrm._pull_failed($1, $2)",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._pull_failed failed");
}

/*
 * The associations of the objects of a search answer, as
 * {"companies": <v4 batch/read answer>, ...}: one call per target type.
 * NULL when a read got no usable answer (*problem says why) or when the
 * rate limit says wait (*stop, *wait_ms).  Each call goes to *calls.
 */
static char *
read_associations(DueSubscription *sub, const HsResponse *found, List **calls,
				  char **problem, bool *stop, long *wait_ms)
{
	int			n;
	char	  **ids;
	char	  **values;
	StringInfoData out;

	/* an answer that is not one is _receive's to refuse */
	if (!hs_parse_property(found->body, found->body_len, "hs_object_id", &n, &ids, &values))
		n = 0;
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	for (int a = 0; a < sub->nassoc && n > 0; a++)
	{
		HsJsonBody *body = hs_body_new();
		HsResponse	resp;
		TimestampTz called_at;
		char	   *path;

		if (!may_call(wait_ms))
		{
			*stop = true;
			return NULL;
		}
		for (int i = 0; i < n; i++)
			hs_body_add_read(body, ids[i]);
		path = psprintf("%s/%s/%s/batch/read", HS_ASSOCIATIONS_PREFIX,
						sub->object_type, sub->assoc[a]);
		pull_call(path, hs_body_finish(body), &resp, &called_at);
		*calls = lappend(*calls, erpcrm_call_log("POST", path, called_at, &resp, n));
		*problem = pull_problem("association read", &resp);
		if (*problem != NULL)
			return NULL;
		appendStringInfo(&out, "%s\"%s\": %s", a > 0 ? ", " : "", sub->assoc[a], resp.body);
	}
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * One page of one subscription: ask for the request, call HubSpot (the
 * search, then the associations), hand the answer over.  Returns whether
 * more changes wait; *stop says that pulls must pause now (*wait_ms from
 * now).
 */
static bool
pull_page(DueSubscription *sub, bool outbound_busy, bool *stop, long *wait_ms)
{
	Oid			types[4] = {INT4OID, INT4OID, INT4OID, INTERVALOID};
	Datum		args[4];
	bool		isnull;
	char	   *request = NULL;
	char	   *path;
	char	   *problem;
	char	   *associations = NULL;
	HsResponse	resp;
	TimestampTz called_at;
	List	   *calls = NIL;
	ListCell   *lc;
	bool		more = false;
	MemoryContext cxt = CurrentMemoryContext;

	if (!may_search(outbound_busy, 1 + sub->nassoc, wait_ms))
	{
		*stop = true;
		return true;
	}

	erpcrm_begin_step("erpcrm: asking for a subscription's changes");
	args[0] = Int32GetDatum(sub->id);
	args[1] = Int32GetDatum(erpcrm_pull_settle_ms);
	args[2] = Int32GetDatum(erpcrm_pull_page_size);
	if (erpcrm_execute_kept("SELECT erpcrm._pull_request($1, $2, $3)::text",
							  3, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "erpcrm._pull_request failed");
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		request = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1));
	erpcrm_end_step();
	if (request == NULL)
		return false;			/* nothing settled since the cursor */

	path = psprintf("%s/%s/search", HS_OBJECTS_PREFIX, sub->object_type);
	pull_call(path, request, &resp, &called_at);
	calls = lappend(calls, erpcrm_call_log("POST", path, called_at, &resp, 0));
	problem = pull_problem("search", &resp);
	if (problem == NULL && sub->nassoc > 0)
	{
		associations = read_associations(sub, &resp, &calls, &problem, stop, wait_ms);
		if (associations == NULL && problem == NULL)
		{
			/* the budget is spent: the page is asked for again later */
			erpcrm_begin_step("erpcrm: recording a subscription's calls");
			foreach(lc, calls)
				erpcrm_log_call(lfirst(lc), 0, false, sub->id);
			erpcrm_end_step();
			return true;
		}
	}

	erpcrm_begin_step("erpcrm: landing HubSpot's changes in the inbox");
	foreach(lc, calls)
		erpcrm_log_call(lfirst(lc), 0, false, sub->id);
	if (problem == NULL)
	{
		Oid			rtypes[4] = {INT4OID, TEXTOID, TEXTOID, TEXTOID};
		Datum		rargs[4];
		char		rnulls[4] = "   n";

		rargs[0] = Int32GetDatum(sub->id);
		rargs[1] = CStringGetTextDatum(request);
		rargs[2] = CStringGetTextDatum(resp.body);
		rargs[3] = associations ? CStringGetTextDatum(associations) : (Datum) 0;
		rnulls[3] = associations ? ' ' : 'n';
		if (erpcrm_execute_kept("SELECT erpcrm._receive($1, $2::jsonb, $3::jsonb, $4::jsonb)",
								  4, rtypes, rargs, rnulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "erpcrm._receive failed");
		more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	else
		pull_failed(sub->id, problem);
	erpcrm_end_step();

	/*
	 * The changes landed are handed over in a transaction of their own: if
	 * a handler holds the worker past erpcrm.handler_timeout, the launcher
	 * stops it, this transaction alone rolls back, and the change is there
	 * for the next worker to park (park_stuck()).
	 */
	if (problem == NULL)
	{
		erpcrm_begin_step("erpcrm: handing HubSpot's changes to a subscription's handler");
		if (erpcrm_run_kept("SELECT erpcrm._hand_over_pending()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._hand_over_pending failed");
		erpcrm_end_step();
	}

	if (problem != NULL)
	{
		*stop = search_blocked_until > GetCurrentTimestamp();
		if (*stop)
			*wait_ms = (long) ((search_blocked_until - GetCurrentTimestamp()) / 1000) + 1;
		return false;
	}
	return more;
}

/*
 * A page whose handling failed outside the handlers (an answer that is not
 * JSON, a subscription whose SQL broke) rolls back, and the failure is
 * recorded as the subscription's problem: the other subscriptions, and
 * delivery, go on.  The cursor stays, so the page is asked for again at the
 * next pull.
 */
static bool
pull_page_guarded(DueSubscription *sub, bool outbound_busy, bool *stop, long *wait_ms)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool more = false;

	PG_TRY();
	{
		more = pull_page(sub, outbound_busy, stop, wait_ms);
	}
	PG_CATCH();
	{
		ErrorData  *edata = erpcrm_step_failed(cxt);
		char	   *why;

		why = psprintf("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode));
		erpcrm_begin_step("erpcrm: recording a failed pull");
		pull_failed(sub->id, why);
		erpcrm_end_step();
		more = false;
	}
	PG_END_TRY();
	return more;
}

/*
 * The change whose handler the launcher stopped the previous worker in (it
 * ran past erpcrm.handler_timeout and did not stop when cancelled) is
 * parked, before anything is handed over: handed over again, it would hold
 * this worker too.
 */
static void
park_stuck(void)
{
	int64		change;
	int			timeout_ms;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		args[2];

	SpinLockAcquire(&erpcrm_shared->mutex);
	change = erpcrm_shared->stuck_change;
	timeout_ms = erpcrm_shared->stuck_timeout_ms;
	SpinLockRelease(&erpcrm_shared->mutex);
	if (change == 0)
		return;
	args[0] = Int64GetDatum(change);
	args[1] = Int32GetDatum(timeout_ms);
	if (SPI_execute_with_args("SELECT erpcrm._park_stuck($1, $2)", 2, types, args, NULL,
							  false, 1) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._park_stuck failed");
	ereport(LOG,
			(errmsg("erpcrm worker: change " INT64_FORMAT " is parked: its handler ran past erpcrm.handler_timeout and did not stop when cancelled",
					change),
			 errdetail("erpcrm.parked_changes shows it; erpcrm.requeue_change() hands it over again.")));
	/* said once the step commits; a failed step tries again next round */
	stuck_parked = true;
}

/* Pull every due subscription, one after the other. */
void
erpcrm_pull(bool outbound_busy, PullOutcome *out)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	List	   *due = NIL;
	ListCell   *lc;
	bool		installed;

	memset(out, 0, sizeof(*out));
	out->next_ms = erpcrm_pull_interval_ms;

	cxt = AllocSetContextCreate(caller, "erpcrm pull", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);

	erpcrm_worker_step("handing over changes");
	erpcrm_begin_step("erpcrm: looking for subscriptions");
	/* SQL older than 1.3 has no subscriptions */
	installed = erpcrm_run_kept("SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n"
							" ON n.oid = p.pronamespace"
							" WHERE n.nspname = 'erpcrm' AND p.proname = '_subscriptions_due'",
							true, 1) == SPI_OK_SELECT && SPI_processed == 1;
	if (installed)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1];

		park_stuck();
		/* requeued changes first */
		if (erpcrm_run_kept("SELECT erpcrm._hand_over_pending()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._hand_over_pending failed");
		/* the inbox's history past erpcrm.inbox_retention, a step a round */
		if (erpcrm_run_kept("SELECT erpcrm._prune_inbox(" CppAsString2(PRUNE_STEP) ")",
						false, 1) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._prune_inbox failed");
		args[0] = Int32GetDatum(erpcrm_pull_interval_ms);
		if (erpcrm_execute_kept("SELECT d.subscription_id, d.name, d.object_type, d.pull,"
								  " s.associations"
								  " FROM erpcrm._subscriptions_due($1) AS d"
								  " JOIN erpcrm.subscription s USING (subscription_id)",
								  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._subscriptions_due failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;
			DueSubscription *s = MemoryContextAllocZero(cxt, sizeof(DueSubscription));
			bool		isnull;

			s->id = DatumGetInt32(SPI_getbinval(t, d, 1, &isnull));
			s->name = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 2));
			s->object_type = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 3));
			s->pull = DatumGetBool(SPI_getbinval(t, d, 4, &isnull));
			{
				Datum		a = SPI_getbinval(t, d, 5, &isnull);
				Datum	   *elems;
				int			nelems;

				deconstruct_array(DatumGetArrayTypeP(a), TEXTOID, -1, false,
								  TYPALIGN_INT, &elems, NULL, &nelems);
				s->nassoc = nelems;
				s->assoc = MemoryContextAllocZero(cxt, sizeof(char *) * Max(nelems, 1));
				for (int k = 0; k < nelems; k++)
					s->assoc[k] = MemoryContextStrdup(cxt, TextDatumGetCString(elems[k]));
			}
			/* the list outlives SPI's memory */
			{
				MemoryContext spi_cxt = MemoryContextSwitchTo(cxt);

				due = lappend(due, s);
				MemoryContextSwitchTo(spi_cxt);
			}
		}
	}
	erpcrm_end_step();
	if (stuck_parked)
	{
		SpinLockAcquire(&erpcrm_shared->mutex);
		erpcrm_shared->stuck_change = 0;
		SpinLockRelease(&erpcrm_shared->mutex);
		stuck_parked = false;
	}

	foreach(lc, due)
	{
		DueSubscription *s = lfirst(lc);
		bool		stop = false;
		long		wait_ms = 0;

		if (!s->pull)
			continue;
		erpcrm_worker_step(psprintf("pulling the changes of subscription \"%s\"", s->name));
		for (;;)
		{
			bool		more;

			CHECK_FOR_INTERRUPTS();
			more = pull_page_guarded(s, outbound_busy, &stop, &wait_ms);
			if (stop)
			{
				out->more = true;
				out->next_ms = Max(10, wait_ms);
				break;
			}
			if (!more)
				break;
			out->pages++;
			if (outbound_busy || ConfigReloadPending)
			{
				/* a page at a time while deliveries wait */
				out->more = true;
				out->next_ms = 0;
				break;
			}
		}
		if (stop)
			break;
	}
	erpcrm_worker_step(NULL);
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(cxt);
}

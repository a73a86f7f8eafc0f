/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The erpcrm delivery worker: one per database, started by the launcher
 *	  (launcher.c) in a slot of shared memory it assigned.  Its loop:
 *
 *		wait on the latch (set by any commit that wrote the outbox, or the
 *		poll interval) -> fold the outbox -> for each mapping in dependency
 *		order, one batch at a time, round after round until nothing is due.
 *
 *	  401/403 stop sending until erpcrm.auth_retry passes or the settings
 *	  are reloaded; transport failures and 5xx back off exponentially; 429s
 *	  wait as HubSpot says.  SIGTERM ends it, also during an HTTP call; SIGHUP
 *	  reloads the settings.  It starts only once recovery has finished, so a
 *	  standby runs none until it is promoted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "activity.h"
#include "kept.h"
#include "backoff.h"
#include "client.h"
#include "delivery.h"
#include "forget.h"
#include "refresh.h"
#include "erpcrm.h"
#include "hubspot.h"
#include "subscribe.h"

/* settings the worker connected with: a change needs a new process */
static char *connected_database = NULL;
static char *connected_role = NULL;

static TimestampTz auth_blocked_until = 0;
static TimestampTz backoff_until = 0;
static int	consecutive_failures = 0;
static bool token_missing = false;

static MemoryContext cycle_cxt = NULL;

/*
 * Work that only a commit can make necessary is not done again in the
 * rounds of a cycle until one came: the count of commits that woke the
 * worker (shmem.c) when the outbox was last folded and when the pulls were
 * last looked at, and when those are due again by the clock.
 */
static uint64 wakes_folded = 0;
static uint64 asks_pulled = 0;
static TimestampTz pull_due_at = 0;

/* when the problems of the mappings were last looked for, and if any */
static TimestampTz problems_at = 0;
static bool problems_shown = false;

static bool leave_if_no_extension(void);

/*
 * What the worker is doing, for the context of its errors and for
 * erpcrm.worker.detail: a failed cycle names the mapping and the step
 * (activity.c).
 */
static void
worker_error_context(void *arg)
{
	const char *cur_step = erpcrm_worker_current_step();
	const char *cur_mapping = erpcrm_worker_current_mapping();

	if (cur_mapping != NULL)
		errcontext("erpcrm worker, mapping \"%s\", %s",
				   cur_mapping, cur_step ? cur_step : "delivering");
	else if (cur_step != NULL)
		errcontext("erpcrm worker, %s", cur_step);
}

/* Show a back-off in erpcrm.worker, with the time it ends. */
static void
enter_backoff(ErpcrmWorkerState state, const char *detail, TimestampTz until)
{
	erpcrm_set_state(state, detail);
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->backoff_until = until;
	SpinLockRelease(&erpcrm_shared->mutex);
}

static void
worker_exit(int code, Datum arg)
{
	hs_http_cleanup();
	if (erpcrm_shared == NULL)
		return;
	erpcrm_limiter_detach();
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->worker_pid = 0;
	erpcrm_shared->worker_latch = NULL;
	erpcrm_shared->state = ERPCRM_WORKER_STOPPED;
	strlcpy(erpcrm_shared->detail, "", sizeof(erpcrm_shared->detail));
	SpinLockRelease(&erpcrm_shared->mutex);
}

/* (Re)configure the HTTP client and the rate limiter from the settings. */
static void
configure_client(void)
{
	char	   *token = NULL;
	MemoryContext old = CurrentMemoryContext;
	ErpcrmPortalConfig portal;

	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->portal_changed = false;
	SpinLockRelease(&erpcrm_shared->mutex);

	PG_TRY();
	{
		token = erpcrm_read_token();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(LOG,
				(errmsg("erpcrm worker cannot read its access token: %s", edata->message)));
		token = pstrdup("");
	}
	PG_END_TRY();

	token_missing = (token[0] == '\0');
	erpcrm_configure_http(token);
	/* databases that send with the same token share one limiter */
	erpcrm_portal_config(&portal);
	erpcrm_limiter_attach(portal.hubspot_url, token, portal.max_calls_per_10s);
	explicit_bzero(token, strlen(token));
	pfree(token);
}

/*
 * Where the due keys are: the due queue of its own (1.3), or, with older
 * SQL, sync_state, which held the due index itself.  Looked up each time,
 * as ALTER EXTENSION UPDATE may run under the worker.
 */
const char *
erpcrm_due_relation(void)
{
	Oid			nsp = get_namespace_oid("erpcrm", true);

	if (OidIsValid(nsp) && OidIsValid(get_relname_relid("sync_queue", nsp)))
		return "erpcrm.sync_queue";
	return "erpcrm.sync_state";
}

/*
 * Whether erpcrm.pause() holds, and when the next key is due (0: none).
 * SPI is connected.
 */
static void
read_next_due(bool *paused, TimestampTz *next_due)
{
	int			ret;
	char	   *query;

	/*
	 * The next due key: the first entry of each mapping's due index, so
	 * that the cost does not grow with the number of keys.
	 */
	query = psprintf("SELECT c.paused,"
					 " (SELECT min((SELECT s.next_attempt_at FROM %s s"
					 "   WHERE s.mapping_id = m.mapping_id AND s.state = 'pending'"
					 "     AND s.next_attempt_at IS NOT NULL"
					 "     AND s.next_attempt_at < 'infinity'"
					 "   ORDER BY s.next_attempt_at LIMIT 1))"
					 "  FROM erpcrm.mapping m)"
					 " FROM erpcrm.control c",
					 erpcrm_due_relation());
	ret = erpcrm_execute_kept_unsorted(query, 0, NULL, NULL, true, 1);
	pfree(query);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read erpcrm.control");
	{
		bool		isnull;
		Datum		d;

		*paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		*next_due = isnull ? 0 : DatumGetTimestampTz(d);
	}
}

/* Load the mappings in dependency order (targets before their users). */
static List *
load_mappings(bool *paused, TimestampTz *next_due)
{
	read_next_due(paused, next_due);
	return erpcrm_read_mappings(cycle_cxt);
}

/*
 * The mappings and their associations, in dependency order (targets before
 * their users), allocated in cxt.  SPI is connected.  The worker reads them
 * every cycle; erpcrm.preview() reads them as the worker does.
 */
List *
erpcrm_read_mappings(MemoryContext cxt)
{
	List	   *result = NIL;
	int			ret;
	bool		v11;
	bool		v12;
	MemoryContext spi_cxt;

	ret = erpcrm_run_kept("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'erpcrm'",
					  true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the version of extension erpcrm");
	/* 1.0 has no deal features; its library-side code paths stay off */
	v11 = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "1.0") != 0;
	v12 = v11 && strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "1.1") != 0;

	/* 1.0 has no match property and no owner: those columns are NULL */
	ret = erpcrm_run_kept(psprintf("WITH RECURSIVE lvl(mapping_id, depth) AS ("
							   "  SELECT mapping_id, 0 FROM erpcrm.mapping"
							   "  UNION ALL"
							   "  SELECT a.mapping_id, l.depth + 1 FROM erpcrm.association a"
							   "    JOIN lvl l ON a.target_id = l.mapping_id)"
							   " SELECT m.mapping_id, m.name, m.source::pg_catalog.regclass::pg_catalog.text,"
							   "   (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a"
							   "     WHERE a.attrelid = m.source AND a.attname = 'erp_id' AND NOT a.attisdropped),"
							   "   m.object_type, m.id_property, m.on_delete = 'archive',"
							   "   COALESCE(m.batch_size, 0), m.paused%s, %s"
							   " FROM erpcrm.mapping m JOIN lvl USING (mapping_id)"
							   " GROUP BY m.mapping_id"
							   " ORDER BY max(lvl.depth), m.mapping_id",
							   /* a mapping whose owner was dropped waits, as paused */
							   v11 ? " OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = m.owner)" : "",
							   v11 ? "m.match_property, m.owner::pg_catalog.oid" :
							   "NULL, 0::pg_catalog.oid"),
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read erpcrm.mapping");

	spi_cxt = MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		MappingDef *m = palloc0(sizeof(MappingDef));
		bool		isnull;

		m->id = DatumGetInt32(SPI_getbinval(t, d, 1, &isnull));
		m->name = SPI_getvalue(t, d, 2);
		m->source = SPI_getvalue(t, d, 3);
		m->erp_id_type = SPI_getvalue(t, d, 4);
		m->object_type = SPI_getvalue(t, d, 5);
		m->id_property = SPI_getvalue(t, d, 6);
		m->archive = DatumGetBool(SPI_getbinval(t, d, 7, &isnull));
		m->batch_size = DatumGetInt32(SPI_getbinval(t, d, 8, &isnull));
		m->paused = DatumGetBool(SPI_getbinval(t, d, 9, &isnull));
		m->match_property = SPI_getvalue(t, d, 10);
		m->v11 = v11;
		m->v12 = v12;
		m->owner = DatumGetObjectId(SPI_getbinval(t, d, 11, &isnull));
		result = lappend(result, m);
	}
	MemoryContextSwitchTo(spi_cxt);

	ret = erpcrm_run_kept(psprintf("SELECT a.mapping_id, a.column_name, a.target_id, t.name, t.object_type,"
							   "  COALESCE(a.type_id, 0), a.category, %s,"
							   "  t.source::pg_catalog.regclass::pg_catalog.text"
							   " FROM erpcrm.association a JOIN erpcrm.mapping t ON t.mapping_id = a.target_id"
							   " ORDER BY a.mapping_id, a.column_name, a.target_id",
							   v11 ? "a.as_property, a.inherit_owner" : "NULL, false"),
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read erpcrm.association");

	spi_cxt = MemoryContextSwitchTo(cxt);
	{
		ListCell   *lc;

		foreach(lc, result)
		{
			MappingDef *m = lfirst(lc);

			m->assoc = palloc0(sizeof(AssocDef) * Max(SPI_processed, 1));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	t = SPI_tuptable->vals[i];
				TupleDesc	d = SPI_tuptable->tupdesc;
				bool		isnull;
				AssocDef   *a;

				if (DatumGetInt32(SPI_getbinval(t, d, 1, &isnull)) != m->id)
					continue;
				a = &m->assoc[m->nassoc++];
				a->column = SPI_getvalue(t, d, 2);
				a->target_id = DatumGetInt32(SPI_getbinval(t, d, 3, &isnull));
				a->target_name = SPI_getvalue(t, d, 4);
				a->target_type = SPI_getvalue(t, d, 5);
				a->type_id = DatumGetInt32(SPI_getbinval(t, d, 6, &isnull));
				a->category = SPI_getvalue(t, d, 7);
				a->as_property = SPI_getvalue(t, d, 8);
				a->inherit_owner = DatumGetBool(SPI_getbinval(t, d, 9, &isnull));
				a->target_source = SPI_getvalue(t, d, 10);
			}
		}
	}
	MemoryContextSwitchTo(spi_cxt);
	return result;
}

static bool
extension_ready(void)
{
	bool		ready;

	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	ready = OidIsValid(get_extension_oid("erpcrm", true));
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return ready;
}

/* One call of an erpcrm function, in a transaction of its own. */
static void
run_step(const char *activity, const char *sql)
{
	erpcrm_begin_step(activity);
	if (erpcrm_run_kept(sql, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "%s failed", sql);
	erpcrm_end_step();
}

/* Is this erpcrm function installed (the SQL may be older than us)? */
static bool
has_function(const char *signature)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	args[0] = CStringGetTextDatum(signature);
	if (erpcrm_execute_kept("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look up %s", signature);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * How many commits have woken the worker so far; with asked, only those of
 * erpcrm's functions (erpcrm._wake()), not the ERP's captured changes.
 */
static uint64
wakes_so_far(bool asked)
{
	uint64		n;

	SpinLockAcquire(&erpcrm_shared->mutex);
	n = asked ? erpcrm_shared->asks : erpcrm_shared->wakes;
	SpinLockRelease(&erpcrm_shared->mutex);
	return n;
}

/*
 * erpcrm._before_fold() finds sources again by name (a view dropped and
 * created again, renamed, or given an owner that may map it) and fans out
 * the keys that watches with a key query captured.  Neither can have work
 * unless a relation or a role membership changed, or erpcrm.fan_out holds
 * keys: the worker runs it then, and once a poll interval whatever
 * happened.  Invalidation messages say what changed; they are taken in at
 * the start of a transaction.
 */
static bool catalog_changed = true;
static TimestampTz before_fold_at = 0;

static void
catalog_changed_callback(Datum arg, Oid relid)
{
	catalog_changed = true;
}

static void
roles_changed_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	catalog_changed = true;
}

static bool
before_fold_needed(void)
{
	static bool registered = false;
	bool		isnull;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(catalog_changed_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, roles_changed_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, roles_changed_callback, (Datum) 0);
		registered = true;
	}
	if (catalog_changed ||
		GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(before_fold_at, erpcrm_poll_interval_ms))
		return true;
	if (erpcrm_run_kept("SELECT EXISTS (SELECT FROM erpcrm.fan_out)", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look at erpcrm.fan_out");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
fold(void)
{
	/* read before the fold's snapshot: a commit after it wakes us again */
	wakes_folded = wakes_so_far(false);
	erpcrm_begin_step("erpcrm: folding the outbox");
	/* 1.2: sources found again by name, key queries of watches resolved */
	if (has_function("erpcrm._before_fold()") && before_fold_needed())
	{
		/* what changes after this transaction began is seen next time */
		catalog_changed = false;
		before_fold_at = GetCurrentTimestamp();
		if (erpcrm_run_kept("SELECT erpcrm._before_fold()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._before_fold() failed");
	}
	if (erpcrm_run_kept("SELECT erpcrm._fold()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._fold() failed");
	erpcrm_end_step();
}

/*
 * What keeps mappings from delivering, in plain words, one mapping after the
 * other (1.2; empty before).  Allocated in the caller's context.
 */
static char *
mapping_problems(void)
{
	StringInfoData buf;
	MemoryContext caller = CurrentMemoryContext;
	char	   *result;

	erpcrm_begin_step("erpcrm: checking mappings");
	initStringInfo(&buf);
	if (has_function("erpcrm._mapping_problem(integer)"))
	{
		if (erpcrm_run_kept("SELECT pg_catalog.format('mapping \"%s\": %s', m.name, p)"
						" FROM erpcrm.mapping m, erpcrm._mapping_problem(m.mapping_id) AS p"
						" WHERE p IS NOT NULL ORDER BY m.name", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the problems of the mappings");
		for (uint64 i = 0; i < SPI_processed; i++)
			appendStringInfo(&buf, "%s%s", i > 0 ? "; " : "",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	}
	result = MemoryContextStrdup(caller, buf.data);
	erpcrm_end_step();
	return result;
}

static void
recover(void)
{
	run_step("erpcrm: recovering keys left in flight", "SELECT erpcrm._recover()");
}

static long
ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) ((t - now) / 1000) + 1;
}

/*
 * Is the source of a mapping this one is associated to gone?  Its rows
 * cannot be read then (the read query names the target's view); the mapping
 * waits, and the others go on.
 */
static bool
target_missing(List *mappings, MappingDef *m)
{
	for (int a = 0; a < m->nassoc; a++)
	{
		ListCell   *lc;

		foreach(lc, mappings)
		{
			MappingDef *t = lfirst(lc);

			if (t->id == m->assoc[a].target_id && t->erp_id_type == NULL)
				return true;
		}
	}
	return false;
}

/*
 * The copy of HubSpot's owners (erpcrm.hubspot_owner, 1.2) is refreshed when
 * the worker starts and then every hour; after a failed refresh, again in a
 * minute.
 */
#define ERPCRM_OWNERS_REFRESH_MS	(60 * 60 * 1000)
#define ERPCRM_OWNERS_RETRY_MS		(60 * 1000)
static TimestampTz owners_due = 0;

static bool
owners_table_exists(void)
{
	bool		exists;

	erpcrm_begin_step("erpcrm: looking for the owners cache");
	exists = erpcrm_run_kept("SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
					" ON n.oid = c.relnamespace WHERE n.nspname = 'erpcrm' AND c.relname = 'hubspot_owner'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1;
	erpcrm_end_step();
	return exists;
}

/*
 * After a batch (or a reconcile step, mapping NULL): does HubSpot want the
 * worker to stop sending for a while?  Then show why, and set *delay.
 */
static bool
must_back_off(DeliveryOutcome *out, const char *mapping, long *delay)
{
	TimestampTz now = GetCurrentTimestamp();

	if (out->auth_failed)
	{
		auth_blocked_until = TimestampTzPlusMilliseconds(now, erpcrm_auth_retry_ms);
		enter_backoff(ERPCRM_WORKER_AUTH_FAILED, out->auth_message, auth_blocked_until);
		ereport(LOG,
				(errmsg("erpcrm worker stops sending: %s", out->auth_message),
				 errhint("Fix erpcrm.token or erpcrm.token_file and reload the configuration.")));
		*delay = ms_until(auth_blocked_until, now);
		return true;
	}
	if (out->blocked_until > now)
	{
		enter_backoff(ERPCRM_WORKER_RATE_LIMITED, "HubSpot's rate limit is exhausted",
					  out->blocked_until);
		backoff_until = out->blocked_until;
		*delay = ms_until(backoff_until, now);
		return true;
	}
	if (out->transient)
	{
		consecutive_failures++;
		*delay = (long) erpcrm_backoff_ms(erpcrm_retry_base_ms, erpcrm_retry_max_ms,
										  consecutive_failures);
		backoff_until = TimestampTzPlusMilliseconds(now, *delay);
		enter_backoff(ERPCRM_WORKER_BACKING_OFF,
					  mapping ? psprintf("mapping \"%s\": %s", mapping, out->transient_message) :
					  pstrdup(out->transient_message),
					  backoff_until);
		return true;
	}
	return false;
}

/* Can the worker deliver this mapping's keys now? */
static bool
deliverable(List *mappings, MappingDef *m)
{
	/* no source, or no erp_id: see mapping_problems() */
	return !m->paused && m->erp_id_type != NULL && !target_missing(mappings, m);
}

/*
 * The mappings the worker delivers in this cycle, in dependency order
 * (targets first): it delivers them round after round, one batch each.
 */
static List *
deliverable_order(List *mappings)
{
	List	   *order = NIL;
	ListCell   *lc;

	foreach(lc, mappings)
	{
		MappingDef *m = lfirst(lc);

		if (deliverable(mappings, m))
			order = lappend(order, m);
	}
	return order;
}

/* Keys delivered: count them, and HubSpot is reachable again. */
static void
count_delivered(DeliveryOutcome *out)
{
	if (out->synced <= 0)
		return;
	consecutive_failures = 0;
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->objects_sent += out->synced;
	SpinLockRelease(&erpcrm_shared->mutex);
}

/*
 * The batch sent is recorded, the one claimed ahead given back; true when
 * there was any.
 */
static bool
flush_deliveries(void)
{
	DeliveryOutcome out;
	bool		any;

	erpcrm_worker_step("recording the results");
	any = erpcrm_delivery_flush(&out);
	erpcrm_worker_step(NULL);
	count_delivered(&out);
	return any;
}

/*
 * The way back (pull.c), when it can have work: a pull is due by the clock
 * (erpcrm.pull_interval after the last look, or at once when changes were
 * left to read), or an erpcrm function woke the worker since (a
 * subscription made or changed, changes requeued); the ERP's commits do
 * not count.  Otherwise the rounds of a backfill would
 * look for due subscriptions, hand over and prune the inbox after every
 * batch.
 */
static void
pull_if_due(bool outbound_busy, PullOutcome *pulled)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		asks = wakes_so_far(true);

	if (asks == asks_pulled && now < pull_due_at)
	{
		pulled->more = false;
		pulled->next_ms = ms_until(pull_due_at, now);
		return;
	}
	asks_pulled = asks;
	erpcrm_pull(outbound_busy, pulled);
	pull_due_at = (pulled->more && pulled->next_ms == 0) ? 0 :
		TimestampTzPlusMilliseconds(now, pulled->next_ms);
}

/*
 * One cycle: fold, then batches for every mapping in dependency order,
 * round after round while keys are due.  Returns how long to sleep.
 */
static long
run_cycle(void)
{
	List	   *mappings;
	List	   *order;
	bool		paused;
	TimestampTz next_due;
	TimestampTz now;
	bool		any;
	long		delay;
	PullOutcome pulled;

	MemoryContextReset(cycle_cxt);
	memset(&pulled, 0, sizeof(pulled));
	pulled.next_ms = erpcrm_pull_interval_ms;

	if (!extension_ready())
	{
		(void) leave_if_no_extension();
		erpcrm_set_state(ERPCRM_WORKER_NOT_CONFIGURED,
						 "extension erpcrm is not installed in this database");
		return erpcrm_poll_interval_ms;
	}

	erpcrm_worker_mapping(NULL);
	erpcrm_worker_step("folding the outbox");
	fold();
	erpcrm_worker_step("loading the mappings");
	erpcrm_begin_step("erpcrm: loading mappings");
	mappings = load_mappings(&paused, &next_due);
	erpcrm_end_step();
	erpcrm_worker_step(NULL);

	if (paused)
	{
		erpcrm_set_state(ERPCRM_WORKER_PAUSED, "paused by erpcrm.pause()");
		return erpcrm_poll_interval_ms;
	}
	if (token_missing)
	{
		erpcrm_set_state(ERPCRM_WORKER_NOT_CONFIGURED,
						 "no access token: set erpcrm.token or erpcrm.token_file and reload");
		return erpcrm_poll_interval_ms;
	}

	/*
	 * HubSpot's owners for erpcrm.owner_id(): at start, then every hour.  An
	 * ERROR in between, a failed refresh, or SQL older than 1.2 (no copy to
	 * keep) waits a minute, not a cycle.
	 */
	if (GetCurrentTimestamp() >= owners_due)
	{
		owners_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ERPCRM_OWNERS_RETRY_MS);
		if (owners_table_exists())
		{
			erpcrm_worker_step("reading HubSpot's owners");
			if (erpcrm_refresh_owners())
				owners_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 ERPCRM_OWNERS_REFRESH_MS);
			erpcrm_worker_step(NULL);
		}
	}

	order = deliverable_order(mappings);
	do
	{
		ListCell   *lc;

		any = false;
		foreach(lc, order)
		{
			MappingDef *m = lfirst(lc);
			DeliveryOutcome out;

			erpcrm_worker_mapping(m->name);
			erpcrm_worker_step("delivering a batch");
			/* the batch after it may be claimed while it is on the wire */
			erpcrm_deliver_batch(order, foreach_current_index(lc), &out);
			erpcrm_worker_mapping(NULL);
			erpcrm_worker_step(NULL);
			if (out.claimed > 0)
				any = true;
			count_delivered(&out);
			if (must_back_off(&out, m->name, &delay))
			{
				flush_deliveries();
				return delay;
			}
			if (ConfigReloadPending)
			{
				flush_deliveries();
				return 0;
			}
		}

		/*
		 * The way back (pull.c): HubSpot's changes for the subscriptions,
		 * within their share of the budget while deliveries wait.
		 */
		erpcrm_worker_step(NULL);
		pull_if_due(any, &pulled);
		if (pulled.more && pulled.next_ms == 0)
			any = true;
		/* the last batch recorded: keys changed in flight are due again */
		if (!any && flush_deliveries())
			any = true;

		/*
		 * Only a commit that wrote the outbox (or called an erpcrm function
		 * that wakes the worker) gives the fold something to do; the cycle
		 * began with one.
		 */
		if (any && wakes_so_far(false) != wakes_folded)
			fold();
	} while (any);

	/*
	 * After the deliveries, so that a commit's keys go out first (what a
	 * refresh marks wakes the worker again).  1.3: refreshes of mappings
	 * that have refresh_every, a few steps a cycle.
	 */
	erpcrm_worker_step("refreshing a mapping");
	erpcrm_refresh_some();
	erpcrm_worker_step(NULL);

	/* 1.3: erasures asked with erpcrm.forget() */
	erpcrm_worker_step("erasing in HubSpot");
	erpcrm_erase_some();
	erpcrm_worker_step(NULL);

	/*
	 * Nothing is due: one step of a reconcile (1.3), if one was asked for.
	 * The next cycle folds and delivers before the step after it.
	 */
	{
		DeliveryOutcome out;
		bool		worked;

		erpcrm_worker_step("reconciling with HubSpot");
		worked = erpcrm_reconcile_work(mappings, &out);
		erpcrm_worker_step(NULL);
		if (must_back_off(&out, NULL, &delay))
			return delay;
		if (worked)
			return 0;
	}

	/* nothing due now: sleep until the next retry or the poll */
	erpcrm_begin_step("erpcrm: planning");
	read_next_due(&paused, &next_due);
	erpcrm_end_step();

	/*
	 * Idle, but what stops a mapping stays in sight.  Looked for again when
	 * a mapping cannot be delivered or had a problem, and otherwise once a
	 * poll interval, not at every commit.
	 */
	now = GetCurrentTimestamp();
	if (list_length(order) != list_length(mappings) || problems_shown ||
		now >= TimestampTzPlusMilliseconds(problems_at, erpcrm_poll_interval_ms))
	{
		char	   *problems = mapping_problems();

		problems_shown = (problems[0] != '\0');
		problems_at = now;
		erpcrm_set_state(ERPCRM_WORKER_IDLE, problems);
	}
	else
		erpcrm_set_state(ERPCRM_WORKER_IDLE, "");
	if (next_due != 0)
		return Max(10, Min(Min(ms_until(next_due, now), (long) erpcrm_poll_interval_ms),
						   Max(10, pulled.next_ms)));
	return Max(10, Min((long) erpcrm_poll_interval_ms, pulled.next_ms));
}

/*
 * The launcher asks for a new worker when erpcrm.role changes, or when
 * erpcrm.database no longer names this database: leave for it.
 */
static void
leave_if_settings_changed(void)
{
	if (strcmp(connected_role, erpcrm_role) == 0 &&
		(erpcrm_database[0] == '\0' || strcmp(connected_database, erpcrm_database) == 0))
		return;
	ereport(LOG,
			(errmsg("erpcrm worker for database \"%s\" leaves to apply erpcrm.database or erpcrm.role",
					connected_database)));
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->restart_at_once = true;
	SpinLockRelease(&erpcrm_shared->mutex);
	proc_exit(0);
}

/*
 * This database has no erpcrm (any more): without erpcrm.database, the
 * launcher starts a worker only where the extension is, so leave and say
 * so.  With it, stay and say so in erpcrm.worker, as before 1.3.
 */
static bool
leave_if_no_extension(void)
{
	if (erpcrm_database[0] != '\0')
		return false;
	/* tests only: where a CREATE EXTENSION committing now races the launcher */
	if (erpcrm_test_probe_pause_ms > 0)
	{
		TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														erpcrm_test_probe_pause_ms);

		pgstat_report_activity(STATE_RUNNING,
							   "erpcrm: no erpcrm here; pausing before leaving (erpcrm.test_probe_pause)");
		while (GetCurrentTimestamp() < until)
		{
			CHECK_FOR_INTERRUPTS();
			pg_usleep(50000L);
		}
	}
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->no_extension = true;
	SpinLockRelease(&erpcrm_shared->mutex);
	proc_exit(0);
	return true;
}

void
erpcrm_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	Oid			dboid;
	Oid			roleoid;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (erpcrm_cluster == NULL || slotno < 0 || slotno >= erpcrm_cluster->nslots)
		elog(FATAL, "erpcrm worker started without a slot");
	erpcrm_shared = &erpcrm_cluster->slots[slotno];
	SpinLockAcquire(&erpcrm_shared->mutex);
	dboid = erpcrm_shared->database_oid;
	roleoid = erpcrm_shared->role_oid;
	SpinLockRelease(&erpcrm_shared->mutex);

	before_shmem_exit(worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, roleoid, 0);

	/* what it connected with: a change of either needs a new worker */
	connected_role = MemoryContextStrdup(TopMemoryContext, erpcrm_role);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	connected_database = MemoryContextStrdup(TopMemoryContext,
											 get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->worker_pid = MyProcPid;
	erpcrm_shared->worker_latch = MyLatch;
	erpcrm_shared->database_oid = MyDatabaseId;
	strlcpy(erpcrm_shared->database_name, connected_database, NAMEDATALEN);
	erpcrm_shared->state = ERPCRM_WORKER_STARTING;
	strlcpy(erpcrm_shared->detail, "", sizeof(erpcrm_shared->detail));
	SpinLockRelease(&erpcrm_shared->mutex);

	leave_if_settings_changed();
	if (!extension_ready())
		(void) leave_if_no_extension();

	/* going: the launcher counts it as served from now on */
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->probe = false;
	erpcrm_shared->started_at = GetCurrentTimestamp();
	SpinLockRelease(&erpcrm_shared->mutex);

	/* the worker's SQL names everything with its schema */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * The worker's own commits need not wait for the WAL flush: a state
	 * change lost in a crash only makes it send a key again, and every send
	 * is idempotent.  The ERP's commits are untouched.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "erpcrm worker", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("erpcrm worker");

	cycle_cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm cycle",
									  ALLOCSET_DEFAULT_SIZES);

	hs_http_init();
	configure_client();

	ereport(LOG,
			(errmsg("erpcrm worker started for database \"%s\"", connected_database)));

	if (extension_ready())
		recover();

	for (;;)
	{
		long		sleep_ms;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			leave_if_settings_changed();
			configure_client();
			/* erpcrm.pull_interval may have changed */
			pull_due_at = 0;
			/* a reload is the DBA saying "try again now" */
			auth_blocked_until = 0;
			backoff_until = 0;
			consecutive_failures = 0;
		}
		if (erpcrm_shared->portal_changed)
		{
			/* erpcrm.portal changed: as a reload does */
			configure_client();
			auth_blocked_until = 0;
			backoff_until = 0;
			consecutive_failures = 0;
		}
		if (erpcrm_shared->retry_now)
		{
			/* so is erpcrm.retry_now() */
			SpinLockAcquire(&erpcrm_shared->mutex);
			erpcrm_shared->retry_now = false;
			SpinLockRelease(&erpcrm_shared->mutex);
			auth_blocked_until = 0;
			backoff_until = 0;
			consecutive_failures = 0;
		}

		now = GetCurrentTimestamp();
		SpinLockAcquire(&erpcrm_shared->mutex);
		erpcrm_shared->last_wake = now;
		SpinLockRelease(&erpcrm_shared->mutex);

		if (auth_blocked_until > now)
			sleep_ms = ms_until(auth_blocked_until, now);
		else if (backoff_until > now)
			sleep_ms = ms_until(backoff_until, now);
		else
		{
			MemoryContext loop_cxt = CurrentMemoryContext;
			ErrorContextCallback errcallback;

			errcallback.callback = worker_error_context;
			errcallback.arg = NULL;
			errcallback.previous = error_context_stack;
			error_context_stack = &errcallback;
			PG_TRY();
			{
				/* whatever a cycle allocates goes when the next one starts */
				MemoryContextSwitchTo(cycle_cxt);
				sleep_ms = run_cycle();
				MemoryContextSwitchTo(loop_cxt);
			}
			PG_CATCH();
			{
				ErrorData  *edata;
				char	   *detail;
				const char *cur_step = erpcrm_worker_current_step();

				/* a broken mapping view must not stop the others for long */
				error_context_stack = errcallback.previous;

				/*
				 * Report it as it was raised (SQLSTATE, detail, hint, and the
				 * context naming the mapping and the step), at LOG: the
				 * worker goes on.
				 */
				edata = erpcrm_step_failed(loop_cxt);

				if (erpcrm_worker_current_mapping() != NULL)
					detail = psprintf("mapping \"%s\", %s: %s (SQLSTATE %s)",
									  erpcrm_worker_current_mapping(),
									  cur_step ? cur_step : "delivering",
									  edata->message, unpack_sql_state(edata->sqlerrcode));
				else
					detail = psprintf("%s%s%s (SQLSTATE %s)",
									  cur_step ? cur_step : "", cur_step ? ": " : "",
									  edata->message, unpack_sql_state(edata->sqlerrcode));
				erpcrm_worker_mapping(NULL);
				erpcrm_worker_step(NULL);
				FreeErrorData(edata);
				/* batches in flight are dropped: recover() below resends them */
				erpcrm_delivery_forget();
				/* a failed _before_fold() is tried again at the next fold */
				catalog_changed = true;
				consecutive_failures++;
				sleep_ms = (long) erpcrm_backoff_ms(erpcrm_retry_base_ms, erpcrm_retry_max_ms,
													consecutive_failures);
				backoff_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);
				enter_backoff(ERPCRM_WORKER_BACKING_OFF, detail, backoff_until);
				pfree(detail);
				if (extension_ready())
					recover();
			}
			PG_END_TRY();
			error_context_stack = errcallback.previous;
		}

		if (sleep_ms > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*-------------------------------------------------------------------------
 *
 * subscribe.c
 *	  The way back: a subscription's handler, an ERP function taking one
 *	  erpcrm.hubspot_change, is run with the privileges of the role that
 *	  subscribed, in a security-restricted operation, as mapping views are
 *	  read (owner.c).  The settings of the worker's pulls are here too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "erpcrm.h"
#include "subscribe.h"

int			erpcrm_pull_interval_ms = 10000;
int			erpcrm_pull_settle_ms = 10000;
int			erpcrm_pull_share = 20;
int			erpcrm_pull_page_size = 200;
int			erpcrm_inbox_retention_min = 10080;
int			erpcrm_handler_timeout_ms = 300000;

void
erpcrm_define_pull_settings(void)
{
	DefineCustomIntVariable("erpcrm.pull_interval",
							"How often the worker asks HubSpot for the changes of each subscription.",
							NULL,
							&erpcrm_pull_interval_ms,
							10000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.pull_settle",
							"How old a HubSpot change must be before a pull reads past it.",
							"HubSpot's search finds a change only a few seconds after it was made; a change younger than this is read at a later pull.",
							&erpcrm_pull_settle_ms,
							10000, 0, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.pull_share",
							"Percentage of erpcrm.max_calls_per_10s that pulls may use while deliveries wait.",
							"Outbound delivery comes first; when nothing waits to be delivered, pulls go as fast as HubSpot's search limit allows.",
							&erpcrm_pull_share,
							20, 0, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.pull_page_size",
							"Changes asked for per search call (HubSpot's maximum is 200).",
							NULL,
							&erpcrm_pull_page_size,
							200, 1, 200,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.inbox_retention",
							"How long erpcrm.inbox keeps changes that were handled or discarded.",
							"The latest change of each object is kept regardless: it tells the next change what changed.",
							&erpcrm_inbox_retention_min,
							10080, 1, 5256000,
							PGC_SIGHUP, GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.handler_timeout",
							"How long a subscription's handler may run on one change before it is cancelled and the change parked.",
							"Outside a statement timeout of its own; 0 lets handlers run without limit.  A handler that loops or waits for a lock would otherwise stop the worker.",
							&erpcrm_handler_timeout_ms,
							300000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Whether the role asking (erpcrm_asking_role(), which refuses inside a
 * security-restricted operation) may do what the worker does for the
 * objects of owner: the worker may, and so may a role with the privileges
 * of owner (a superuser has them; with no owner, only a superuser).  A
 * session's C code that logs a HubSpot call it made itself sets
 * erpcrm_logging_own_call around that one statement.  The role asking goes
 * into *caller.
 */
bool		erpcrm_logging_own_call = false;

static bool
may_act_as_worker(Oid owner, Oid *caller)
{
	*caller = erpcrm_asking_role();
	if (erpcrm_shared != NULL && erpcrm_shared->worker_pid == MyProcPid)
		return true;
	/* check_connection() and setup_hubspot() log the calls they make */
	if (erpcrm_logging_own_call)
		return true;
	if (OidIsValid(owner))
		return has_privs_of_role(*caller, owner);
	return superuser_arg(*caller);
}

/* The name of owner for a message, its OID when it was dropped. */
static char *
owner_name_for_message(Oid owner)
{
	char	   *name = OidIsValid(owner) ? GetUserNameFromId(owner, true) : NULL;

	return name != NULL ? name : psprintf("%u", owner);
}

/*
 * erpcrm._check_hand_over(subscription text, owner regrole) returns void
 *
 * Only the worker hands changes to a subscription's handler: they come
 * from HubSpot.  Any other caller of the functions that land changes or
 * hand them over (erpcrm._receive(), erpcrm._hand_over_pending()), whose
 * EXECUTE erpcrm_admin holds for the worker's role, could feed crafted
 * changes to the handler of another role, which would run them as that
 * role.  So a caller who is not the worker must have the privileges of the
 * subscription's owner (or be a superuser): such a caller may run the
 * handler as that role anyway.  Inside a security-restricted operation nobody
 * may.
 */
PG_FUNCTION_INFO_V1(erpcrm_check_hand_over_v1);
Datum
erpcrm_check_hand_over_v1(PG_FUNCTION_ARGS)
{
	char	   *name = PG_ARGISNULL(0) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			owner = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	Oid			caller;

	if (may_act_as_worker(owner, &caller))
		PG_RETURN_VOID();
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to hand changes to the handler of subscription \"%s\"", name),
			 errdetail("The handler runs as role \"%s\"; only the erpcrm worker, that role and superusers may hand it changes.",
					   owner_name_for_message(owner)),
			 errhint("Changes reach a handler from HubSpot, through the worker. To hand a parked change over again, use erpcrm.requeue_change().")));
	PG_RETURN_VOID();
}

/*
 * erpcrm._is_worker() returns boolean
 *
 * Whether the erpcrm worker calls: erpcrm._receive() leaves the changes it
 * lands to the worker's own hand-over, in a transaction of its own.
 */
PG_FUNCTION_INFO_V1(erpcrm_is_worker_v1);
Datum
erpcrm_is_worker_v1(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(erpcrm_shared != NULL && erpcrm_shared->worker_pid == MyProcPid);
}

/*
 * erpcrm._check_worker(what text, owner regrole) returns void
 *
 * The functions through which the worker records what HubSpot answered it
 * (a failed pull, the API calls it made, an erasure carried out, HubSpot's
 * owners, the findings of a reconcile run) are
 * executable by erpcrm_admin because the worker's role is one; called by
 * another erpcrm_admin they would fake a problem, an API share, an erasure
 * that never happened or the owners deals are given.  So only the worker
 * may call them, or a role with the privileges of the owner of the object
 * they write about (the subscription's, the mapping's; a superuser has
 * them; with no owner, only a superuser).  Inside a security-restricted
 * operation nobody may.  what says what was refused, as "record a pull of
 * subscription "won_deals"".
 */
PG_FUNCTION_INFO_V1(erpcrm_check_worker_v1);
Datum
erpcrm_check_worker_v1(PG_FUNCTION_ARGS)
{
	char	   *what = PG_ARGISNULL(0) ? "do this" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			owner = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	Oid			caller;

	if (may_act_as_worker(owner, &caller))
		PG_RETURN_VOID();
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s", what),
			 OidIsValid(owner) ?
			 errdetail("Only the erpcrm worker records what HubSpot answered it; besides the worker, only role \"%s\", the owner, and superusers may.",
					   owner_name_for_message(owner)) :
			 errdetail("Only the erpcrm worker records what HubSpot answered it; besides the worker, only superusers may."),
			 errhint("This function is the worker's own. erpcrm's views show what it recorded; erpcrm's documented functions change it.")));
	PG_RETURN_VOID();
}

/*
 * erpcrm._check_delivery(what text, mapping integer) returns void
 *
 * The functions of the delivery path (fold the outbox, claim a mapping's
 * keys, record them delivered, failed or given up, their links, the end of
 * a refresh) are executable by erpcrm_admin because the worker's role is
 * one; called by another erpcrm_admin they would record a made-up HubSpot
 * id for a key (whose next update then goes into that other object), park
 * keys or hold them back.  So only the worker may call them, or a role with
 * the privileges of the mapping's owner (a superuser has them; with no
 * mapping, only a superuser).  Inside a security-restricted operation
 * nobody may.  They run once per batch: the worker passes on a comparison,
 * and only another caller has the mapping looked up.  what says what was
 * refused, as "claim the keys" (of mapping "contacts").
 */
PG_FUNCTION_INFO_V1(erpcrm_check_delivery_v1);
Datum
erpcrm_check_delivery_v1(PG_FUNCTION_ARGS)
{
	char	   *what;
	char	   *name = NULL;
	Oid			owner = InvalidOid;
	Oid			caller = erpcrm_asking_role();

	if (erpcrm_shared != NULL && erpcrm_shared->worker_pid == MyProcPid)
		PG_RETURN_VOID();
	if (!PG_ARGISNULL(1))
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {PG_GETARG_DATUM(1)};
		MemoryContext cxt = CurrentMemoryContext;

		SPI_connect();
		if (SPI_execute_with_args("SELECT owner, name FROM erpcrm.mapping WHERE mapping_id = $1",
								  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up mapping %d", PG_GETARG_INT32(1));
		if (SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			owner = isnull ? InvalidOid : DatumGetObjectId(d);
			name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
			name = name != NULL ? MemoryContextStrdup(cxt, name) : NULL;
		}
		SPI_finish();
	}
	if (OidIsValid(owner) ? has_privs_of_role(caller, owner) : superuser_arg(caller))
		PG_RETURN_VOID();
	what = PG_ARGISNULL(0) ? "do this" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 name != NULL ?
			 errmsg("permission denied to %s of mapping \"%s\"", what, name) :
			 errmsg("permission denied to %s", what),
			 OidIsValid(owner) ?
			 errdetail("Only the erpcrm worker delivers a mapping's keys and records how it went; besides the worker, only role \"%s\", the mapping's owner, and superusers may.",
					   owner_name_for_message(owner)) :
			 errdetail("Only the erpcrm worker delivers keys and records how it went; besides the worker, only superusers may."),
			 errhint("This function is the worker's own. erpcrm.status and erpcrm.failures show the keys; erpcrm.requeue(), erpcrm.resync() and erpcrm.discard() change them.")));
	PG_RETURN_VOID();
}

/*
 * The worker says in its slot which change's handler it runs, and since
 * when (change NULL: none now).  A handler that catches the cancel of
 * erpcrm.handler_timeout and goes on would hold the worker for ever: the
 * launcher stops a worker whose handler runs past the timeout and a grace,
 * and names the change, which the next worker parks (erpcrm._park_stuck()).
 */
static void
handler_running(HeapTupleHeader change)
{
	int64		change_id = 0;

	if (erpcrm_shared == NULL || erpcrm_shared->worker_pid != MyProcPid)
		return;
	if (change != NULL)
	{
		bool		isnull;
		Datum		id = GetAttributeByNum(change, 1, &isnull);

		if (!isnull)
			change_id = DatumGetInt64(id);
	}
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->handler_change = change_id;
	erpcrm_shared->handler_since = change_id != 0 ? GetCurrentTimestamp() : 0;
	SpinLockRelease(&erpcrm_shared->mutex);
}

/*
 * erpcrm._run_handler(handler regprocedure, owner regrole,
 *					   change erpcrm.hubspot_change) returns void
 *
 * Calls the handler with the change, as owner, in a security-restricted
 * operation: it may write the ERP's tables as owner may, but cannot change
 * the session's role, settings that outlive it, or erpcrm's definitions.
 * Its errors reach the caller, which parks the change.
 */
PG_FUNCTION_INFO_V1(erpcrm_run_handler_v1);
Datum
erpcrm_run_handler_v1(PG_FUNCTION_ARGS)
{
	Oid			handler;
	Oid			owner;
	Oid			argtypes[1];
	Datum		args[1];
	HeapTuple	tup;
	Form_pg_proc proc;
	char	   *query;
	ErpcrmSavedUser saved;
	volatile bool timed;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a handler, its owner and a change are needed")));
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot run the handler of a subscription within a security-restricted operation")));
	handler = PG_GETARG_OID(0);
	owner = PG_GETARG_OID(1);
	args[0] = PG_GETARG_DATUM(2);
	argtypes[0] = get_fn_expr_argtype(fcinfo->flinfo, 2);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the handler of the subscription (function %u) does not exist", handler),
				 errhint("Subscribe again with erpcrm.subscribe() and a handler that exists, then requeue the parked changes.")));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	query = psprintf("SELECT %s($1)",
					 quote_qualified_identifier(get_namespace_name(proc->pronamespace),
												NameStr(proc->proname)));
	ReleaseSysCache(tup);

	erpcrm_as_owner_begin(owner, &saved);
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(handler)),
				 errdetail("The handler runs as role \"%s\", who subscribed.",
						   GetUserNameFromId(owner, false))));

	/*
	 * A handler that loops, or waits for a lock an idle session holds, would
	 * hold up the worker and every delivery: past erpcrm.handler_timeout it
	 * is cancelled as a statement past statement_timeout is, and the change
	 * is parked (unless a statement timeout runs already).
	 */
	timed = erpcrm_handler_timeout_ms > 0 && !get_timeout_active(STATEMENT_TIMEOUT);
	if (timed)
		enable_timeout_after(STATEMENT_TIMEOUT, erpcrm_handler_timeout_ms);
	handler_running(PG_GETARG_HEAPTUPLEHEADER(2));
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args(query, 1, argtypes, args, NULL, false, 0) < 0)
			elog(ERROR, "could not run the handler %s", format_procedure(handler));
		SPI_finish();
	}
	PG_FINALLY();
	{
		handler_running(NULL);
		if (timed)
			disable_timeout(STATEMENT_TIMEOUT, false);
	}
	PG_END_TRY();
	erpcrm_as_owner_end(&saved);
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 *
 * owner.c
 *	  Mapping views are read with the privileges of the role that defined
 *	  the mapping (erpcrm.mapping.owner), never with those of the extension's
 *	  owner or of the worker's role: a function in a view, or in a key, runs
 *	  as that role, in a security-restricted operation, as ANALYZE and
 *	  REFRESH MATERIALIZED VIEW do for a table's owner.
 *
 *	  Inside any security-restricted operation (those reads, and ANALYZE,
 *	  REFRESH, CREATE INDEX of others) no function of erpcrm that can change
 *	  its definitions or state may run: a function in a view must not define
 *	  a mapping, whose owner would then be whoever reads the view.  A
 *	  function manager hook refuses every volatile SECURITY DEFINER (or
 *	  SET-clause) function of schema erpcrm there; the stable ones that views
 *	  call (hubspot_id(), stage_id(), pipeline_id()) stay allowed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "erpcrm.h"

static fmgr_hook_type prev_fmgr_hook = NULL;

/*
 * The owners of the SECURITY DEFINER functions of other schemas that are
 * running now, innermost last: when one of them calls erpcrm.map(), the
 * role that asks is that function's owner, not the session's role.
 */
static Oid *definer_stack = NULL;
static int	definer_depth = 0;
static int	definer_size = 0;

/* What the hook keeps per FmgrInfo (its "private" Datum). */
#define GUARD_KNOWN		0x1		/* computed */
#define GUARD_ERPCRM	0x2		/* a volatile function of erpcrm */
#define GUARD_DEFINER	0x4		/* a SECURITY DEFINER function of another schema */

static Datum
guard_kind(Oid fn_oid)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			nsp = get_namespace_oid("erpcrm", true);
	uint64		kind = GUARD_KNOWN;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tup))
		return (Datum) kind;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (OidIsValid(nsp) && proc->pronamespace == nsp)
	{
		if (proc->provolatile == PROVOLATILE_VOLATILE)
			kind |= GUARD_ERPCRM;
	}
	else if (proc->prosecdef)
		kind |= GUARD_DEFINER | ((uint64) proc->proowner << 8);
	ReleaseSysCache(tup);
	return (Datum) kind;
}

static void
refuse(Oid fn_oid)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("cannot execute %s within security-restricted operation",
					format_procedure(fn_oid)),
			 errdetail("erpcrm reads a mapping view with its owner's privileges in a security-restricted operation, and nothing in a view may change erpcrm's definitions or state."),
			 errhint("Call erpcrm's functions directly, not from a function of a mapping view.")));
}

/*
 * Refuse a call of a function of erpcrm that may change its definitions or
 * state (any volatile one) inside a security-restricted operation.
 */
void
erpcrm_refuse_if_restricted(Oid fn_oid)
{
	if (InSecurityRestrictedOperation() &&
		(DatumGetUInt64(guard_kind(fn_oid)) & GUARD_ERPCRM))
		refuse(fn_oid);
}

static void
erpcrm_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *private)
{
	uint64		kind;

	if (prev_fmgr_hook)
		prev_fmgr_hook(event, flinfo, private);

	/* the hook runs for SECURITY DEFINER and SET-clause functions only */
	if (event == FHET_START && DatumGetUInt64(*private) == 0)
		*private = guard_kind(flinfo->fn_oid);
	kind = DatumGetUInt64(*private);

	switch (event)
	{
		case FHET_START:
			if ((kind & GUARD_ERPCRM) && InSecurityRestrictedOperation())
				refuse(flinfo->fn_oid);
			if (kind & GUARD_DEFINER)
			{
				if (definer_depth >= definer_size)
				{
					int			size = Max(16, definer_size * 2);

					definer_stack = definer_stack ?
						repalloc(definer_stack, sizeof(Oid) * size) :
						MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * size);
					definer_size = size;
				}
				definer_stack[definer_depth++] = (Oid) (kind >> 8);
			}
			break;
		case FHET_END:
		case FHET_ABORT:
			if ((kind & GUARD_DEFINER) && definer_depth > 0)
				definer_depth--;
			break;
	}
}

/* No SECURITY DEFINER function outlives its transaction. */
static void
guard_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		definer_depth = 0;
}

/* In every backend that loads the library, also without preloading. */
void
erpcrm_install_guard(void)
{
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = erpcrm_fmgr_hook;
	RegisterXactCallback(guard_xact_callback, NULL);
}

/*
 * The role that asks erpcrm for something: the owner of the innermost
 * SECURITY DEFINER function (of another schema) now running, else the
 * session's role (after SET ROLE).  Inside a security-restricted operation
 * nobody may ask.
 */
Oid
erpcrm_asking_role(void)
{
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot define or change erpcrm's objects within security-restricted operation"),
				 errhint("Call erpcrm's functions directly, not from a function of a mapping view.")));
	if (definer_depth > 0)
		return definer_stack[definer_depth - 1];
	return GetOuterUserId();
}

/* Switch to the owner; the caller's identity goes into *saved. */
void
erpcrm_as_owner_begin(Oid owner, ErpcrmSavedUser *saved)
{
	/* a dropped owner has no privileges to lend: say so plainly */
	if (OidIsValid(owner) && !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", owner),
				 errdetail("The role that defined this erpcrm object was dropped, and its code runs with that role's privileges."),
				 errhint("Give its objects another owner: SELECT erpcrm.reassign_owned('%u', 'new_owner');", owner)));
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->nestlevel = NewGUCNestLevel();
}

/* Back to the caller (an ERROR in between restores it at abort). */
void
erpcrm_as_owner_end(ErpcrmSavedUser *saved)
{
	AtEOXact_GUC(false, saved->nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/*
 * erpcrm._view_keys(source regclass, owner regrole) returns setof text
 *
 * The distinct erp_id values of a mapping view, read as owner.
 */
static Datum view_keys(FunctionCallInfo fcinfo, bool with_null);

PG_FUNCTION_INFO_V1(erpcrm_view_keys_v1);
Datum
erpcrm_view_keys_v1(PG_FUNCTION_ARGS)
{
	return view_keys(fcinfo, false);
}

/*
 * erpcrm._view_keys_all(source regclass, owner regrole) returns setof text
 *
 * The same, plus one NULL when rows of the view have a NULL erp_id (1.2:
 * such rows are reported, not skipped without a trace).
 */
PG_FUNCTION_INFO_V1(erpcrm_view_keys_v2);
Datum
erpcrm_view_keys_v2(PG_FUNCTION_ARGS)
{
	return view_keys(fcinfo, true);
}

static Datum
view_keys(FunctionCallInfo fcinfo, bool with_null)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid = PG_GETARG_OID(0);
	Oid			owner = PG_GETARG_OID(1);
	char	   *relname = get_rel_name(relid);
	char	   *query;
	ErpcrmSavedUser saved;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the source of the mapping (relation %u) does not exist", relid),
				 errhint("Redefine the mapping with erpcrm.map().")));
	query = psprintf("SELECT DISTINCT v.erp_id::pg_catalog.text FROM %s AS v%s",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												relname),
					 with_null ? "" : " WHERE v.erp_id IS NOT NULL");

	erpcrm_as_owner_begin(owner, &saved);
	SPI_connect();
	if (SPI_execute(query, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the keys of %s", relname);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		key = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		Datum		values[1];
		bool		nulls[1] = {isnull};

		values[0] = key;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	erpcrm_as_owner_end(&saved);
	return (Datum) 0;
}

/*
 * erpcrm._fan_out_keys(query text, owner regrole, keys text[]) returns setof text
 *
 * A watch's key query, run by the worker when it folds: $1 holds the keys
 * its trigger captured (text[]), and the first column of each row it
 * returns is a key of the watch's mapping.  It runs as the role that
 * defined the watch, read-only, in a security-restricted operation, like a
 * mapping view.
 */
PG_FUNCTION_INFO_V1(erpcrm_fan_out_keys_v1);
Datum
erpcrm_fan_out_keys_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			owner = PG_GETARG_OID(1);
	Datum		keys = PG_GETARG_DATUM(2);
	Oid			argtypes[1] = {TEXTARRAYOID};
	ErpcrmSavedUser saved;
	int			ret;

	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot run the key query of a watch within a security-restricted operation")));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	erpcrm_as_owner_begin(owner, &saved);
	SPI_connect();
	ret = SPI_execute_with_args(query, 1, argtypes, &keys, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the key query of a watch must be a SELECT")));
	if (SPI_tuptable->tupdesc->natts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the key query of a watch returns no column")));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		Datum		values[1];
		bool		nulls[1] = {false};

		if (key == NULL)
			continue;
		values[0] = CStringGetTextDatum(key);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	erpcrm_as_owner_end(&saved);
	return (Datum) 0;
}

/*
 * erpcrm._check_key_query(query text, owner regrole) returns void
 *
 * Plans a key query as the role that defines the watch, without running
 * it: one SELECT taking the captured keys as $1 (text[]) and returning the
 * mapping's keys in its first column.
 */
PG_FUNCTION_INFO_V1(erpcrm_check_key_query_v1);
Datum
erpcrm_check_key_query_v1(PG_FUNCTION_ARGS)
{
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			owner = PG_GETARG_OID(1);
	Oid			argtypes[1] = {TEXTARRAYOID};
	ErpcrmSavedUser saved;
	SPIPlanPtr	plan;
	List	   *sources;
	CachedPlanSource *ps;

	erpcrm_as_owner_begin(owner, &saved);
	SPI_connect();
	plan = SPI_prepare(query, 1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	sources = SPI_plan_get_plan_sources(plan);
	ps = list_length(sources) == 1 ? linitial(sources) : NULL;
	if (ps == NULL || ps->commandTag != CMDTAG_SELECT || ps->resultDesc == NULL ||
		ps->raw_parse_tree == NULL || !IsA(ps->raw_parse_tree->stmt, SelectStmt) ||
		((SelectStmt *) ps->raw_parse_tree->stmt)->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the key query of a watch must be one SELECT"),
				 errhint("For example: SELECT l.id FROM erp.lines l WHERE l.sku = ANY ($1)")));
	if (ps->resultDesc->natts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the key query of a watch must return the mapping's keys in its first column")));
	SPI_finish();
	erpcrm_as_owner_end(&saved);
	PG_RETURN_VOID();
}

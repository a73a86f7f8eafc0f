/*-------------------------------------------------------------------------
 *
 * portal.c
 *	  The HubSpot portal of one database: erpcrm.portal, a one-row table
 *	  only superusers can read or write, may name the database's own API
 *	  URL, token file, call budget and API version.  What it leaves NULL
 *	  comes from the cluster's settings (erpcrm.hubspot_url,
 *	  erpcrm.token_file, erpcrm.max_calls_per_10s, erpcrm.api_version).
 *
 *	  The table holds the path of a token file, never a token: a token in a
 *	  table would travel in dumps, base backups, WAL and replicas, and in the
 *	  log of the INSERT that put it there.  (ALTER DATABASE ... SET is no
 *	  place for it either: pg_db_role_setting is readable by every role.)
 *
 *	  The worker reads the table directly (it may run as a role that has no
 *	  privilege on it); a change wakes it to read the table again at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "erpcrm.h"

/* A column of erpcrm.portal by name; NULL when null (or absent). */
static Datum
column(Relation rel, HeapTuple tup, const char *name, bool *isnull)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), name);

	*isnull = true;
	if (attnum == InvalidAttrNumber)
		return (Datum) 0;
	return heap_getattr(tup, attnum, RelationGetDescr(rel), isnull);
}

static char *
text_column(Relation rel, HeapTuple tup, const char *name)
{
	bool		isnull;
	Datum		d = column(rel, tup, name, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The portal settings of the current database, allocated in the caller's
 * memory context.  Outside a transaction (the worker between cycles) one
 * is started for the look.
 */
void
erpcrm_portal_config(ErpcrmPortalConfig *config)
{
	MemoryContext caller = CurrentMemoryContext;
	bool		own_xact = !IsTransactionState();
	Oid			nsp;
	Oid			relid = InvalidOid;

	config->hubspot_url = erpcrm_hubspot_url;
	config->token_file = NULL;
	config->max_calls_per_10s = erpcrm_max_calls_per_10s;
	config->api_version = erpcrm_api_version;
	config->own_api_version = false;
	config->own = false;

	if (!OidIsValid(MyDatabaseId))
		return;
	if (own_xact)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	nsp = get_namespace_oid("erpcrm", true);
	if (OidIsValid(nsp))
		relid = get_relname_relid("portal", nsp);
	if (OidIsValid(relid))
	{
		Relation	rel = table_open(relid, AccessShareLock);
		bool		pushed = false;
		TableScanDesc scan;
		HeapTuple	tup;

		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pushed = true;
		}
		scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
		if ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			char	   *url = text_column(rel, tup, "hubspot_url");
			char	   *file = text_column(rel, tup, "token_file");
			char	   *version = text_column(rel, tup, "api_version");
			bool		isnull;
			Datum		d = column(rel, tup, "max_calls_per_10s", &isnull);

			config->own = true;
			if (url != NULL)
				config->hubspot_url = MemoryContextStrdup(caller, url);
			if (file != NULL)
				config->token_file = MemoryContextStrdup(caller, file);
			if (!isnull)
				config->max_calls_per_10s = DatumGetInt32(d);
			if (version != NULL)
			{
				config->api_version = MemoryContextStrdup(caller, version);
				config->own_api_version = true;
			}
		}
		table_endscan(scan);
		if (pushed)
			PopActiveSnapshot();
		table_close(rel, AccessShareLock);
	}
	if (own_xact)
		CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}

/* Where the token comes from, in words (erpcrm.check_connection()). */
const char *
erpcrm_token_source(void)
{
	ErpcrmPortalConfig config;

	erpcrm_portal_config(&config);
	if (config.token_file != NULL && config.token_file[0] != '\0')
		return psprintf("read from %s (erpcrm.portal)", config.token_file);
	if (erpcrm_token != NULL && erpcrm_token[0] != '\0')
		return "set in erpcrm.token";
	return psprintf("read from %s", erpcrm_token_file);
}

/* ----------------------------------------------------------------
 * A change of erpcrm.portal wakes this database's worker at commit
 * ----------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(erpcrm_portal_changed_v1);
Datum
erpcrm_portal_changed_v1(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("erpcrm._portal_changed() may only be called as a trigger")));
	erpcrm_at_commit(ERPCRM_AT_COMMIT_PORTAL);
	return PointerGetDatum(NULL);
}

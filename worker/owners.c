/*-------------------------------------------------------------------------
 *
 * owners.c
 *	  erpcrm.owner_id(email): the HubSpot owner id of an e-mail, from the
 *	  copy of HubSpot's owners the worker keeps (erpcrm.hubspot_owner).
 *	  Mapping views call it (erpcrm.owner_id(s.email) AS hubspot_owner_id)
 *	  while they are read as their owner, in a security-restricted
 *	  operation: it only reads.  An e-mail that matches no active owner
 *	  gives NULL and is counted; the worker records the count per mapping
 *	  after each batch (erpcrm.status.unknown_owners).
 *
 *	  erpcrm_refresh_owners(): the worker's copy of HubSpot's owners,
 *	  read through the calls of a delivery batch (send.c, record.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "activity.h"
#include "delivery_int.h"
#include "erpcrm.h"

uint64		erpcrm_owner_misses = 0;

static SPIPlanPtr owner_plan = NULL;

PG_FUNCTION_INFO_V1(erpcrm_owner_id_v1);
Datum
erpcrm_owner_id_v1(PG_FUNCTION_ARGS)
{
	text	   *email;
	Datum		arg;
	char	   *id = NULL;
	text	   *result = NULL;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	email = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(email) == 0)
		PG_RETURN_NULL();
	arg = PointerGetDatum(email);

	SPI_connect();
	if (owner_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		owner_plan = SPI_prepare("SELECT o.owner_id FROM erpcrm.hubspot_owner o"
								 " WHERE pg_catalog.lower(o.email) = pg_catalog.lower($1)"
								 " AND NOT o.archived ORDER BY o.owner_id LIMIT 1",
								 1, types);
		if (owner_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(owner_plan);
	}
	if (SPI_execute_plan(owner_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading erpcrm.hubspot_owner failed");
	if (SPI_processed == 1)
		id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (id != NULL)
	{
		text	   *t = cstring_to_text(id);

		/* out of SPI's memory, which SPI_finish() frees */
		result = (text *) SPI_palloc(VARSIZE(t));
		memcpy(result, t, VARSIZE(t));
	}
	SPI_finish();
	if (result == NULL)
	{
		erpcrm_owner_misses++;
		PG_RETURN_NULL();
	}
	PG_RETURN_TEXT_P(result);
}

/* ----------------------------------------------------------------
 * HubSpot's owners, for erpcrm.owner_id()
 * ----------------------------------------------------------------
 */

/*
 * Read every owner, active ones (archived=false) then deactivated ones
 * (archived=true), 100 a page, and replace erpcrm.hubspot_owner with them
 * in one transaction.  The calls count in the rate limit and go into
 * erpcrm.api_log.  When a page cannot be read the copy is left as it was.
 */
bool
erpcrm_refresh_owners(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "erpcrm owners",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Batch		b;
	DeliveryOutcome outcome;
	MappingDef	none;
	List	   *ids = NIL,
			   *emails = NIL,
			   *archived = NIL;
	bool		ok = true;

	memset(&none, 0, sizeof(none));
	none.name = "owners";
	none.v11 = none.v12 = true;
	init_batch(&b, &none, &outcome, cxt, 0);

	for (int pass = 0; pass < 2 && ok; pass++)
	{
		char	   *after = NULL;

		do
		{
			HsResponse	resp;
			int			n;
			char	  **pid;
			char	  **pem;
			bool	   *par;
			char	   *next = NULL;
			char	   *path = psprintf("%s?limit=100&archived=%s%s%s", HS_OWNERS_PATH,
										pass ? "true" : "false",
										after ? "&after=" : "", after ? after : "");

			call_hubspot(&b, "GET", path, NULL, 0, &resp);
			if (outcome.blocked_until != 0 || resp.transport_error != 0 ||
				resp.status != 200 ||
				!hs_parse_owners(resp.body, resp.body_len, &n, &pid, &pem, &par, &next))
			{
				ereport(LOG,
						(errmsg("erpcrm worker: could not read HubSpot's owners: %s",
								resp.transport_error ? resp.transport_message :
								psprintf("GET %s answered %ld", HS_OWNERS_PATH, resp.status)),
						 errdetail("erpcrm.owner_id() answers from the copy it has until the next refresh.")));
				ok = false;
				break;
			}
			for (int i = 0; i < n; i++)
			{
				ids = lappend(ids, pid[i]);
				emails = lappend(emails, pem[i]);
				archived = lappend(archived, par[i] ? "true" : "false");
			}
			after = next;
		} while (after != NULL);
	}

	erpcrm_begin_step("erpcrm: recording HubSpot's owners");
	if (ok)
	{
		Oid			types[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[3];

		args[0] = text_array(ids);
		args[1] = text_array(emails);
		args[2] = text_array(archived);
		if (SPI_execute_with_args("SELECT erpcrm._owners_refreshed($1, $2, $3)",
								  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._owners_refreshed failed");
	}
	record_calls(&b);
	erpcrm_end_step();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return ok;
}

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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "delivery.h"
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

/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  erpcrm._preview(): the requests the worker would send to HubSpot for
 *	  one key of a mapping, built by the worker's own code (delivery.c)
 *	  without sending anything.  erpcrm.preview() (SQL) is its surface.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "delivery.h"
#include "erpcrm.h"
#include "fingerprint.h"

/*
 * erpcrm._preview(mapping_id int, erp_id text, hubspot_id text)
 *	 returns table (step int, method text, path text, body json, note text)
 *
 * hubspot_id is the key's HubSpot object as erpcrm knows it (sync_state),
 * or NULL.
 */
PG_FUNCTION_INFO_V1(erpcrm_preview_v1);
Datum
erpcrm_preview_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		mapping_id;
	char	   *erp_id;
	char	   *known;
	MemoryContext cxt;
	MemoryContext old;
	MappingDef *mapping;
	List	   *steps;
	ListCell   *lc;
	int			n = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the mapping and the key must not be NULL")));
	mapping_id = PG_GETARG_INT32(0);
	erp_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	known = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "erpcrm preview",
								ALLOCSET_DEFAULT_SIZES);
	SPI_connect();
	old = MemoryContextSwitchTo(cxt);
	mapping = erpcrm_mapping_by_id(mapping_id, cxt);
	steps = erpcrm_preview_key(mapping, erp_id, known);
	MemoryContextSwitchTo(old);

	foreach(lc, steps)
	{
		PreviewStep *step = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false, step->method == NULL, step->path == NULL,
		step->body == NULL, step->note == NULL};

		values[0] = Int32GetDatum(++n);
		values[1] = step->method ? CStringGetTextDatum(step->method) : (Datum) 0;
		values[2] = step->path ? CStringGetTextDatum(step->path) : (Datum) 0;
		values[3] = step->body ? CStringGetTextDatum(step->body) : (Datum) 0;
		values[4] = step->note ? CStringGetTextDatum(step->note) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

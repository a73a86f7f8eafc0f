/*-------------------------------------------------------------------------
 *
 * forget.c
 *	  Erasure (GDPR / RODO), the worker's part of erpcrm.forget():
 *
 *	  - a key with a tombstone (erpcrm.forgotten: the SHA-256 of the key)
 *		that a batch claims, because an ERP change, a resync or a refresh
 *		brought it back, loses its sync state and is not sent;
 *	  - each erasure asked for (erpcrm.erasure) is carried out: a contact
 *		by HubSpot's GDPR delete (POST /crm/v3/objects/contacts/gdpr-delete),
 *		any other object by a batch archive.  A 404 means that HubSpot has
 *		nothing to erase.  The HubSpot id (or id property value) is cleared
 *		from erpcrm.erasure once HubSpot answered; the calls are logged in
 *		erpcrm.api_log with paths that name no object.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "activity.h"
#include "kept.h"
#include "erpcrm.h"
#include "forget.h"

#define ERPCRM_ERASURES_PER_CYCLE 10

void
erpcrm_drop_forgotten(Batch *b)
{
	Oid			types[2] = {INT4OID, TEXTARRAYOID};
	Datum		args[2];
	List	   *ids = NIL;

	if (!OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
											  makeString("_drop_forgotten")),
								   2, types, true)))
		return;					/* SQL older than 1.3 */
	/* most mappings have no tombstone at all: a look at the index first */
	args[0] = Int32GetDatum(b->mapping->id);
	if (erpcrm_execute_kept("SELECT EXISTS (SELECT FROM erpcrm.forgotten f WHERE f.mapping_id = $1)",
							1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look for tombstones of mapping \"%s\"", b->mapping->name);
	{
		bool		isnull;

		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			return;
	}
	for (int k = 0; k < b->nkeys; k++)
		ids = lappend(ids, b->keys[k].erp_id);
	args[1] = text_array(ids);
	if (erpcrm_execute_kept("SELECT erpcrm._drop_forgotten($1, $2)",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._drop_forgotten failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *erp_id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		for (int k = 0; k < b->nkeys; k++)
			if (strcmp(b->keys[k].erp_id, erp_id) == 0)
				b->keys[k].outcome = KO_FORGOTTEN;
	}
}

typedef struct Erasure
{
	int64		id;
	char	   *object_type;
	char	   *method;
	char	   *ref;
	char	   *by_property;
} Erasure;

/* The request that erases one object. */
static char *
erasure_request(Erasure *e, char **path)
{
	StringInfoData body;

	initStringInfo(&body);
	if (strcmp(e->method, "gdpr-delete") == 0)
	{
		*path = psprintf("%s/%s/gdpr-delete", HS_OBJECTS_PREFIX, e->object_type);
		appendStringInfoString(&body, "{\"objectId\":");
		escape_json(&body, e->ref);
		if (e->by_property != NULL)
		{
			appendStringInfoString(&body, ",\"idProperty\":");
			escape_json(&body, e->by_property);
		}
		appendStringInfoChar(&body, '}');
	}
	else
	{
		*path = psprintf("%s/%s/batch/archive", HS_OBJECTS_PREFIX, e->object_type);
		appendStringInfoString(&body, "{\"inputs\":[{\"id\":");
		escape_json(&body, e->ref);
		appendStringInfoString(&body, "}]}");
	}
	return body.data;
}

void
erpcrm_erase_some(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "erpcrm erasures",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	List	   *todo = NIL;
	ListCell   *lc;
	MappingDef	none;
	DeliveryOutcome outcome;
	Batch		b;

	erpcrm_begin_step("erpcrm: looking for erasures");
	if (erpcrm_run_kept("SELECT pg_catalog.to_regprocedure('erpcrm._erasures_due(integer)') IS NOT NULL",
					true, 1) == SPI_OK_SELECT &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(ERPCRM_ERASURES_PER_CYCLE)};

		if (erpcrm_execute_kept("SELECT * FROM erpcrm._erasures_due($1)", 1, types, args,
								  NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._erasures_due failed");
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	t = SPI_tuptable->vals[r];
			TupleDesc	d = SPI_tuptable->tupdesc;
			Erasure    *e;
			MemoryContext spi_cxt = MemoryContextSwitchTo(cxt);

			e = palloc0(sizeof(Erasure));
			e->id = pg_strtoint64(SPI_getvalue(t, d, 1));
			e->object_type = SPI_getvalue(t, d, 2);
			e->method = SPI_getvalue(t, d, 3);
			e->ref = SPI_getvalue(t, d, 4);
			e->by_property = SPI_getvalue(t, d, 5);
			todo = lappend(todo, e);
			MemoryContextSwitchTo(spi_cxt);
		}
	}
	erpcrm_end_step();
	if (todo == NIL)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return;
	}

	/* the calls are the worker's, of no mapping */
	memset(&none, 0, sizeof(none));
	none.v11 = none.v12 = true;
	init_batch(&b, &none, &outcome, cxt, 0);
	foreach(lc, todo)
	{
		Erasure    *e = lfirst(lc);
		HsResponse	resp;
		char	   *path;
		char	   *body = erasure_request(e, &path);
		const char *result;
		bool		done;

		call_hubspot(&b, "POST", path, body, 1, &resp);
		if (outcome.auth_failed || outcome.blocked_until != 0)
			break;
		if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
			result = "erased", done = true;
		else if (resp.transport_error == 0 && resp.status == 404)
			result = "not found in HubSpot", done = true;
		else if (resp.transport_error == 0 && resp.status >= 400 && resp.status < 500 &&
				 resp.status != 429 && resp.status != 401 && resp.status != 403)
			result = "refused", done = true;
		else
			result = "retrying", done = false;	/* HubSpot failing: next cycle */

		erpcrm_begin_step("erpcrm: recording an erasure");
		{
			Oid			types[4] = {INT8OID, INT4OID, TEXTOID, BOOLOID};
			Datum		args[4];
			char		nulls[4] = {' ', resp.transport_error ? 'n' : ' ', ' ', ' '};

			args[0] = Int64GetDatum(e->id);
			args[1] = Int32GetDatum((int32) resp.status);
			args[2] = CStringGetTextDatum(result);
			args[3] = BoolGetDatum(done);
			if (erpcrm_execute_kept("SELECT erpcrm._erased($1, $2, $3, $4)", 4, types, args,
									  nulls, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._erased failed");
		}
		record_calls(&b);
		b.calls = NIL;
		erpcrm_end_step();
		if (!done)
			break;
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

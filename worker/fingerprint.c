/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  erpcrm._fingerprints(): the fingerprints (fphash.c) of keys' rows read
 *	  by the worker's own code, for erpcrm.refresh() and
 *	  erpcrm.fingerprint(); and the mapping lookup of the SQL functions that
 *	  run worker code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "delivery.h"
#include "erpcrm.h"
#include "fingerprint.h"

/*
 * A mapping as the worker sees it, by id, for the SQL functions that run the
 * worker's code (erpcrm._preview(), erpcrm._fingerprints()); an ERROR when
 * it does not exist or its view has no erp_id.  SPI is connected.
 */
MappingDef *
erpcrm_mapping_by_id(int32 mapping_id, MemoryContext cxt)
{
	MappingDef *mapping = NULL;
	ListCell   *lc;

	foreach(lc, erpcrm_read_mappings(cxt))
	{
		MappingDef *m = lfirst(lc);

		if (m->id == mapping_id)
			mapping = m;
	}
	if (mapping == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("mapping %d does not exist", mapping_id)));
	if (mapping->erp_id_type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("mapping view %s of mapping \"%s\" has no column \"erp_id\"",
						mapping->source, mapping->name)));
	return mapping;
}

/*
 * erpcrm._fingerprints(mapping_id int, erp_ids text[])
 *	 returns table (erp_id text, fingerprint bigint)
 *
 * The fingerprint of each key's row now, read and built by the worker's own
 * code; keys not in the view give no row, rows that cannot be sent NULL.
 */
PG_FUNCTION_INFO_V1(erpcrm_fingerprints_v1);
Datum
erpcrm_fingerprints_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		mapping_id;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	char	  **keys;
	int			n = 0;
	int64	   *fps;
	bool	   *found;
	bool	   *valid;
	int32		epoch = 0;
	MemoryContext cxt;
	MemoryContext old;
	MappingDef *mapping;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the mapping and the keys must not be NULL")));
	mapping_id = PG_GETARG_INT32(0);
	arr = PG_GETARG_ARRAYTYPE_P(1);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "erpcrm fingerprints",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	keys = palloc(sizeof(char *) * Max(nelems, 1));
	for (int i = 0; i < nelems; i++)
		if (!nulls[i])
			keys[n++] = TextDatumGetCString(elems[i]);
	fps = palloc0(sizeof(int64) * Max(n, 1));
	found = palloc0(sizeof(bool) * Max(n, 1));
	valid = palloc0(sizeof(bool) * Max(n, 1));

	SPI_connect();
	MemoryContextSwitchTo(cxt);
	mapping = erpcrm_mapping_by_id(mapping_id, cxt);
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(mapping_id)};
		bool		isnull;

		if (SPI_execute_with_args("SELECT erpcrm._fingerprint_epoch($1)", 1, types, args,
								  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "erpcrm._fingerprint_epoch failed");
		epoch = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			epoch = 0;
	}
	if (n > 0)
		erpcrm_read_fingerprints(mapping, epoch, n, keys, fps, found, valid);
	MemoryContextSwitchTo(old);

	for (int i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		vnulls[2] = {false, !valid[i]};

		if (!found[i])
			continue;
		values[0] = CStringGetTextDatum(keys[i]);
		values[1] = Int64GetDatum(fps[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, vnulls);
	}
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

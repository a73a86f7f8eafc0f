/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  Fingerprints of the keys of a batch (claim.c), to record them without
 *	  a call when HubSpot holds their content already; erpcrm._fingerprints():
 *	  the same fingerprints (fphash.c) of keys' rows read by the worker's own
 *	  code, for erpcrm.refresh() and erpcrm.fingerprint(); and the mapping
 *	  lookup of the SQL functions that run worker code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "delivery_int.h"
#include "kept.h"
#include "erpcrm.h"
#include "fingerprint.h"
#include "fphash.h"

/* The fingerprint of a key read from the view: what its request carries. */
static int64
key_fingerprint(Batch *b, BatchKey *key, int32 epoch)
{
	MappingDef *m = b->mapping;
	FingerprintInput in;
	const char **columns = palloc(sizeof(char *) * Max(m->nassoc, 1));

	for (int a = 0; a < m->nassoc; a++)
		columns[a] = m->assoc[a].column;
	in.epoch = epoch;
	in.object_type = m->object_type;
	in.id_property = m->id_property;
	in.explicit_id = key->explicit_id;
	in.nprops = b->nprops;
	in.names = (const char *const *) b->prop_names;
	in.values = (const char *const *) key->values;
	in.nassoc = m->nassoc;
	in.assoc_columns = columns;
	in.assoc_to = (const char *const *) key->assoc_to;
	return erpcrm_fingerprint(&in);
}

/*
 * The fingerprint of every key read, and whether HubSpot holds it already:
 * a key whose object HubSpot has, whose last attempt did not fail and whose
 * stored fingerprint is the same is recorded without a call.  SPI is
 * connected and a snapshot is active.
 */
void
erpcrm_fingerprint_keys(Batch *b)
{
	MappingDef *m = b->mapping;
	Oid			types[2] = {INT4OID, TEXTARRAYOID};
	Datum		args[2];
	List	   *ids = NIL;
	int32		epoch;
	bool		isnull;

	b->fingerprints13 = OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
															 makeString("_stored_fingerprints")),
												  2, types, true));
	if (!b->fingerprints13)
		return;
	for (int k = 0; k < b->nkeys; k++)
		if (b->keys[k].in_view && b->keys[k].outcome == KO_NONE)
			ids = lappend(ids, b->keys[k].erp_id);
	if (ids == NIL)
		return;
	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(ids);
	/*
	 * The epoch once, in FROM (in the select list it would be called, with
	 * its settings switched in and out, once per stored fingerprint), and a
	 * row even when no key has a fingerprint stored.
	 */
	if (erpcrm_execute_kept("SELECT e.epoch, f.erp_id, f.fingerprint"
							" FROM erpcrm._fingerprint_epoch($1) AS e(epoch)"
							" LEFT JOIN erpcrm._stored_fingerprints($1, $2) AS f ON true",
							2, types, args, NULL, true, 0) != SPI_OK_SELECT ||
		SPI_processed < 1)
		elog(ERROR, "erpcrm._stored_fingerprints failed");
	epoch = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		epoch = 0;
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(b->cxt);

		for (int k = 0; k < b->nkeys; k++)
		{
			BatchKey   *key = &b->keys[k];

			if (!key->in_view || key->outcome != KO_NONE)
				continue;
			key->fingerprint = key_fingerprint(b, key, epoch);
			key->has_fingerprint = true;
		}
		MemoryContextSwitchTo(spi_cxt);
	}
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	t = SPI_tuptable->vals[r];
		char	   *erp_id = SPI_getvalue(t, SPI_tuptable->tupdesc, 2);
		int64		stored;

		if (erp_id == NULL)
			continue;
		stored = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
		if (isnull)
			continue;
		for (int k = 0; k < b->nkeys; k++)
		{
			BatchKey   *key = &b->keys[k];

			if (key->has_fingerprint && key->fingerprint == stored &&
				key->known_hubspot_id != NULL && strcmp(key->erp_id, erp_id) == 0)
			{
				MemoryContext spi_cxt = MemoryContextSwitchTo(b->cxt);

				set_outcome(key, KO_UNCHANGED, 0, NULL, NULL, NULL);
				key->hubspot_id = pstrdup(key->known_hubspot_id);
				MemoryContextSwitchTo(spi_cxt);
			}
		}
	}
}

/*
 * erpcrm._fingerprints(): these keys' rows read as the worker reads them,
 * and their fingerprints.  SPI is connected and a snapshot is active.
 */
static void
read_fingerprints(MappingDef *m, int32 epoch, int n, char **erp_ids,
						 int64 *fingerprints, bool *found, bool *valid)
{
	Batch		b;
	DeliveryOutcome outcome;

	init_batch(&b, m, &outcome, CurrentMemoryContext, n);
	for (int i = 0; i < n; i++)
		b.keys[i].erp_id = erp_ids[i];
	read_rows(&b);
	for (int i = 0; i < n; i++)
	{
		BatchKey   *key = &b.keys[i];

		found[i] = key->in_view || key->read_error != NULL;
		valid[i] = key->in_view && key->outcome == KO_NONE;
		if (valid[i])
			fingerprints[i] = key_fingerprint(&b, key, epoch);
	}
}

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

		if (erpcrm_execute_kept("SELECT erpcrm._fingerprint_epoch($1)", 1, types, args,
								  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "erpcrm._fingerprint_epoch failed");
		epoch = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			epoch = 0;
	}
	if (n > 0)
		read_fingerprints(mapping, epoch, n, keys, fps, found, valid);
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

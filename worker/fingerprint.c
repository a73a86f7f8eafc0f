/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  The fingerprint of one key: a hash of the exact content erpcrm sends
 *	  to HubSpot for it (properties, the object it updates, the HubSpot ids
 *	  of its association targets).  The worker stores it when HubSpot
 *	  accepts the key (sync_state.fingerprint) and sends a dirtied key only
 *	  when its fingerprint changed; erpcrm._fingerprints() (SQL) gives the
 *	  same hash to erpcrm.refresh().
 *
 *	  The hash is the first 8 bytes of a SHA-256 over a canonical encoding:
 *	  every field length-prefixed, properties in name order (the order of
 *	  the view's columns does not matter), associations in column order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "delivery.h"
#include "erpcrm.h"
#include "fingerprint.h"

/* the encoding's version: change it and every stored fingerprint is stale */
#define FINGERPRINT_VERSION "erpcrm-fingerprint-1"

static void
put_field(StringInfo buf, const char *s)
{
	uint32		len = s ? (uint32) strlen(s) : 0xFFFFFFFF;
	unsigned char b[4];

	/* fixed byte order, whatever the platform's */
	b[0] = (len >> 24) & 0xFF;
	b[1] = (len >> 16) & 0xFF;
	b[2] = (len >> 8) & 0xFF;
	b[3] = len & 0xFF;
	appendBinaryStringInfo(buf, (const char *) b, 4);
	if (s)
		appendBinaryStringInfo(buf, s, (int) len);
}

static const char *const *sort_names;

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(sort_names[*(const int *) a], sort_names[*(const int *) b]);
}

int64
erpcrm_fingerprint(const FingerprintInput *in)
{
	StringInfoData buf;
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	int		   *order;
	uint64		h = 0;

	initStringInfo(&buf);
	put_field(&buf, FINGERPRINT_VERSION);
	appendStringInfo(&buf, "%d", in->epoch);
	appendStringInfoChar(&buf, '\0');
	put_field(&buf, in->object_type);
	put_field(&buf, in->id_property);
	put_field(&buf, in->explicit_id);

	order = palloc(sizeof(int) * Max(in->nprops, 1));
	for (int p = 0; p < in->nprops; p++)
		order[p] = p;
	sort_names = in->names;
	qsort(order, in->nprops, sizeof(int), cmp_names);
	appendStringInfo(&buf, "%d", in->nprops);
	appendStringInfoChar(&buf, '\0');
	for (int p = 0; p < in->nprops; p++)
	{
		put_field(&buf, in->names[order[p]]);
		put_field(&buf, in->values[order[p]]);
	}
	appendStringInfo(&buf, "%d", in->nassoc);
	appendStringInfoChar(&buf, '\0');
	for (int a = 0; a < in->nassoc; a++)
	{
		put_field(&buf, in->assoc_columns[a]);
		put_field(&buf, in->assoc_to ? in->assoc_to[a] : NULL);
	}

	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) buf.data, buf.len) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute a fingerprint: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	for (int i = 0; i < 8; i++)
		h = (h << 8) | digest[i];
	pfree(order);
	pfree(buf.data);
	return (int64) h;
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

/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Step 1 of a delivery batch: claim and read.  In one transaction, the
 *	  due keys of a mapping are claimed (erpcrm._claim), and their current
 *	  rows read from the mapping view in one query, as the mapping's owner,
 *	  together with the HubSpot ids of the objects they are associated to.
 *	  A row that cannot be read fails its key alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "activity.h"
#include "kept.h"
#include "delivery_int.h"
#include "fingerprint.h"
#include "forget.h"
#include "erpcrm.h"
#include "values.h"

static SPIPlanPtr claim_plan = NULL;

static char *
build_read_query(MappingDef *m, bool links12, bool forget13)
{
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT v.*");
	/*
	 * Per association: the target's HubSpot id; NULL while the target is on
	 * its way (wait for it); "" when there is nothing to associate to (the
	 * target was archived, or is not in its view at all).  As of 1.2, a
	 * target that erpcrm archived counts as not in HubSpot even while it is
	 * dirty again: it is waited for when it is back in its view, and there
	 * is nothing to link to when it is not.
	 */
	for (int i = 0; i < m->nassoc; i++)
	{
		const char *col = quote_identifier(m->assoc[i].column);

		appendStringInfoString(&q, links12 ?
							   ", COALESCE((SELECT CASE WHEN s.archived_at IS NOT NULL"
							   "  THEN NULL ELSE s.hubspot_id END" :
							   ", COALESCE((SELECT CASE WHEN s.state = 'archived' AND s.hubspot_id IS NOT NULL"
							   "  THEN '' ELSE s.hubspot_id END");
		appendStringInfo(&q,
						 " FROM erpcrm.sync_state s"
						 " WHERE s.mapping_id = %d AND s.erp_id = (v.%s)::text),"
						 " CASE WHEN v.%s IS NULL OR (EXISTS (SELECT FROM %s AS t"
						 "  WHERE (t.erp_id)::text = (v.%s)::text)",
						 m->assoc[i].target_id, col, col,
						 m->assoc[i].target_source, col);
		/* 1.3: a target erased with erpcrm.forget() is nothing to link to */
		if (forget13)
			appendStringInfo(&q,
							 " AND NOT EXISTS (SELECT FROM erpcrm.forgotten f"
							 "  WHERE f.mapping_id = %d"
							 "  AND f.key_hash = erpcrm._key_hash((v.%s)::text))",
							 m->assoc[i].target_id, col);
		appendStringInfo(&q, ") THEN NULL ELSE '' END) AS __erpcrm_assoc_%d", i);
	}
	if (m->v11 && m->nassoc > 0)
		appendStringInfo(&q,
						 ", (SELECT s.assoc_state FROM erpcrm.sync_state s"
						 " WHERE s.mapping_id = %d AND s.erp_id = (v.erp_id)::text)"
						 " AS __erpcrm_prev_assoc", m->id);
	appendStringInfo(&q, " FROM %s AS v WHERE v.erp_id = ANY ($1::pg_catalog.text[]::%s[])",
					 m->source, m->erp_id_type);
	return q.data;
}

/*
 * The read query of a mapping, planned once and kept while its text and the
 * mapping's owner stay the same (the plan cache replans it when the view
 * changes).
 */
typedef struct ReadPlan
{
	int32		mapping_id;
	Oid			owner;			/* the role it was planned as */
	char	   *query;
	SPIPlanPtr	plan;
} ReadPlan;

static ReadPlan *read_plans = NULL;
static int	nread_plans = 0;

static SPIPlanPtr
read_plan(int32 mapping_id, Oid owner, const char *query, Oid *argtypes)
{
	ReadPlan   *rp = NULL;
	SPIPlanPtr	plan;

	for (int i = 0; i < nread_plans; i++)
		if (read_plans[i].mapping_id == mapping_id)
			rp = &read_plans[i];
	if (rp != NULL && rp->owner == owner && strcmp(rp->query, query) == 0)
		return rp->plan;

	plan = SPI_prepare(query, 1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	if (rp == NULL)
	{
		read_plans = read_plans ?
			repalloc(read_plans, sizeof(ReadPlan) * (nread_plans + 1)) :
			MemoryContextAlloc(TopMemoryContext, sizeof(ReadPlan));
		rp = &read_plans[nread_plans++];
	}
	else
	{
		SPI_freeplan(rp->plan);
		pfree(rp->query);
	}
	rp->mapping_id = mapping_id;
	rp->owner = owner;
	rp->query = MemoryContextStrdup(TopMemoryContext, query);
	rp->plan = plan;
	return plan;
}

/*
 * A value of the row that HubSpot cannot hold: the key fails (the first
 * such property names the reason), and nothing of it is sent.
 */
static void
value_failed(BatchKey *key, const char *property, const char *category,
			 const char *message)
{
	if (key->outcome != KO_NONE)
		return;
	set_outcome(key, KO_FAILED, 0, category, message, NULL);
}

/* ----------------------------------------------------------------
 * Reading the view so that one bad row fails alone
 *
 * The batch is read in a subtransaction.  When that read raises an error (a
 * division by zero, a failed cast, a function that raises, in one row), it
 * is rolled back and the keys are read again in halves, each half in its own
 * subtransaction, until every key that fails stands alone.  Such a key gets
 * the SQL error and its SQLSTATE as its outcome; the rows of all other keys
 * are delivered as usual.
 *
 * A key whose read fails although others were read, or with an error that
 * is about the data (SQLSTATE classes 21, 22, 23, 2F, 38, 39, 44, P0), is
 * parked as failed: it cannot succeed until its row changes.  When every
 * key fails with another error (a view that is broken as a whole: a missing
 * privilege, a dropped function), the keys are retried with backoff, and
 * after erpcrm.max_attempts parked as failed too.
 * ----------------------------------------------------------------
 */
typedef struct ViewRows
{
	TupleDesc	desc;			/* NULL: not one read succeeded */
	HeapTuple  *rows;
	uint64		nrows;
	uint64		cap;
	int			nfailed;		/* keys whose read failed alone */
} ViewRows;

/* Is this error about the data of the row (as opposed to the view)? */
static bool
row_error(int sqlerrcode)
{
	char	   *state = unpack_sql_state(sqlerrcode);

	return strncmp(state, "21", 2) == 0 || strncmp(state, "22", 2) == 0 ||
		strncmp(state, "23", 2) == 0 || strncmp(state, "2F", 2) == 0 ||
		strncmp(state, "38", 2) == 0 || strncmp(state, "39", 2) == 0 ||
		strncmp(state, "44", 2) == 0 || strncmp(state, "P0", 2) == 0;
}

/*
 * Read the rows of keys[0..n) in a subtransaction, as the mapping's owner.
 * Returns NULL when the read succeeded (its rows are added to *out, copied
 * into cxt), or the error it raised (in cxt).
 */
static ErrorData *
read_keys(Batch *b, SPIPlanPtr plan, BatchKey **keys, int n,
		  MemoryContext cxt, ViewRows *out)
{
	MappingDef *m = b->mapping;
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;
	Datum	   *keydatums = palloc(sizeof(Datum) * n);
	Datum		arg;

	for (int i = 0; i < n; i++)
		keydatums[i] = CStringGetTextDatum(keys[i]->erp_id);
	arg = PointerGetDatum(construct_array(keydatums, n, TEXTOID, -1, false,
										  TYPALIGN_INT));

	/*
	 * The subtransaction starts before the switch to the owner: rolling it
	 * back restores our own user id, security context and settings.
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		ErpcrmSavedUser saved;
		int			ret;

		/* the view's functions run as the mapping's owner, not as us */
		if (OidIsValid(m->owner))
			erpcrm_as_owner_begin(m->owner, &saved);
		/* a snapshot of its own, taken after the plan's locks */
		ret = SPI_execute_plan(plan, &arg, NULL, false, 0);
		if (OidIsValid(m->owner))
			erpcrm_as_owner_end(&saved);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading mapping \"%s\" failed: %s", m->name,
				 SPI_result_code_string(ret));

		/* keep the rows beyond the subtransaction */
		MemoryContextSwitchTo(cxt);
		if (out->desc == NULL)
			out->desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			if (out->nrows == out->cap)
			{
				out->cap = Max(out->cap * 2, 16);
				out->rows = out->rows ?
					repalloc(out->rows, sizeof(HeapTuple) * out->cap) :
					palloc(sizeof(HeapTuple) * out->cap);
			}
			out->rows[out->nrows++] = heap_copytuple(SPI_tuptable->vals[r]);
		}
		MemoryContextSwitchTo(caller);
		SPI_freetuptable(SPI_tuptable);

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return edata;
}

/* Bisect keys[0..n) until each key whose read fails stands alone. */
static void
read_isolating(Batch *b, SPIPlanPtr plan, BatchKey **keys, int n,
			   MemoryContext cxt, ViewRows *out, ErrorData *known)
{
	ErrorData  *edata = known ? known : read_keys(b, plan, keys, n, cxt, out);

	if (edata == NULL)
		return;
	CHECK_FOR_INTERRUPTS();
	if (n == 1)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		/* kept until we know whether any other key could be read */
		keys[0]->read_error = edata;
		out->nfailed++;
		MemoryContextSwitchTo(old);
		return;
	}
	read_isolating(b, plan, keys, n / 2, cxt, out, NULL);
	read_isolating(b, plan, keys + n / 2, n - n / 2, cxt, out, NULL);
}

/*
 * Lock the tables the mapping watches, and their partitions, before its
 * view is read (read_keys takes the snapshot of the read after).  A
 * rewriting ALTER TABLE is not MVCC-safe: a snapshot taken before it
 * committed sees the rewritten table empty.  The keys it held would be sent
 * empty and recorded as synced, and nothing dirties them again (the rewrite
 * captures no change).  The view's own plan locks only the tables it names,
 * not those its functions read as they run, and the snapshot of the step
 * (erpcrm_begin_step) is older than both.
 */
static void
lock_watched_tables(MappingDef *m)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1];
	List	   *relids = NIL;
	ListCell   *lc;

	args[0] = Int32GetDatum(m->id);
	if (erpcrm_execute_kept("SELECT DISTINCT w.source::pg_catalog.oid FROM erpcrm.watch w"
							  " WHERE w.mapping_id = $1 ORDER BY 1",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the tables mapping \"%s\" watches", m->name);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			relids = lappend_oid(relids, DatumGetObjectId(d));
	}
	SPI_freetuptable(SPI_tuptable);

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		/* a table dropped meanwhile is simply not there to lock */
		LockRelationOid(relid, AccessShareLock);
		if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			list_free(find_all_inheritors(relid, AccessShareLock, NULL));
	}
	list_free(relids);
}

/*
 * Read the rows of the batch's keys into *out.  Keys whose rows cannot be
 * read get their outcome here.
 */
static void
read_view(Batch *b, SPIPlanPtr plan, MemoryContext cxt, ViewRows *out)
{
	MappingDef *m = b->mapping;
	BatchKey  **keys = palloc(sizeof(BatchKey *) * b->nkeys);
	ErrorData  *edata;
	bool		any_read;

	memset(out, 0, sizeof(*out));
	for (int i = 0; i < b->nkeys; i++)
		keys[i] = &b->keys[i];
	edata = read_keys(b, plan, keys, b->nkeys, cxt, out);
	if (edata == NULL)
		return;

	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("erpcrm worker: reading %d keys of mapping \"%s\" from %s failed: %s",
					b->nkeys, m->name, m->source, edata->message),
			 errdetail("The keys are read again in smaller groups until the rows that fail stand alone.")));
	read_isolating(b, plan, keys, b->nkeys, cxt, out, b->nkeys == 1 ? edata : NULL);

	any_read = out->nfailed < b->nkeys;
	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = keys[i];
		ErrorData  *e = key->read_error;
		MemoryContext old;
		char	   *msg;

		if (e == NULL)
			continue;
		old = MemoryContextSwitchTo(cxt);
		msg = psprintf("reading %s failed for this row: %s (SQLSTATE %s)%s%s",
					   m->source, e->message, unpack_sql_state(e->sqlerrcode),
					   e->detail ? ". " : "", e->detail ? e->detail : "");
		if (any_read || row_error(e->sqlerrcode))
		{
			set_outcome(key, KO_FAILED, 0, "ERP_ROW_ERROR", truncate_message(msg), NULL);
			ereport(LOG,
					(errcode(e->sqlerrcode),
					 errmsg("erpcrm worker: key \"%s\" of mapping \"%s\" is parked as failed: %s",
							key->erp_id, m->name, e->message),
					 e->context ? errcontext("%s", e->context) : 0));
		}
		else
		{
			set_outcome(key, KO_RETRY, 0, "ERP_VIEW_ERROR", truncate_message(msg), NULL);
			key->bounded = true;
		}
		MemoryContextSwitchTo(old);
	}
	if (!any_read)
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("erpcrm worker: mapping \"%s\" cannot read its view %s: %s",
						m->name, m->source, edata->message),
				 errhint("Its keys are retried with backoff, and parked as failed after erpcrm.max_attempts attempts.")));
}

/*
 * Claim up to limit due keys of the mapping (erpcrm._claim) into b->keys,
 * with the HubSpot ids erpcrm knows for them.  Returns how many.  SPI is
 * connected, in the transaction of the claim.
 */
static int
claim_keys(Batch *b, int limit)
{
	MappingDef *m = b->mapping;
	Datum		args[2];
	int			ret;
	MemoryContext spi_cxt;

	if (claim_plan == NULL)
	{
		Oid			types[2] = {INT4OID, INT4OID};

		claim_plan = SPI_prepare("SELECT erp_id, hubspot_id FROM erpcrm._claim($1, $2)",
								 2, types);
		if (claim_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(claim_plan);
	}
	args[0] = Int32GetDatum(m->id);
	args[1] = Int32GetDatum(limit);
	ret = SPI_execute_plan(claim_plan, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming keys of mapping \"%s\" failed: %s",
			 m->name, SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;

	/* keys, copied out of SPI's memory */
	spi_cxt = MemoryContextSwitchTo(b->cxt);
	b->nkeys = (int) SPI_processed;
	b->keys = palloc0(sizeof(BatchKey) * b->nkeys);
	for (int i = 0; i < b->nkeys; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];

		b->keys[i].erp_id = SPI_getvalue(t, SPI_tuptable->tupdesc, 1);
		b->keys[i].known_hubspot_id = SPI_getvalue(t, SPI_tuptable->tupdesc, 2);
	}
	MemoryContextSwitchTo(spi_cxt);
	return b->nkeys;
}

/*
 * Has mapping m keys due?  The first entry of its due index, as the
 * worker's next-due query reads it (worker.c).  SPI is connected.
 *
 * The plan is kept, and generic: it must not depend on the mapping.  Asked
 * as "is any key due" (EXISTS), the planner may take a sequential scan of
 * sync_state while most keys are pending (a backfill): it expects the first
 * row soon, and for a mapping with nothing due it reads the whole table.
 * Asked for the first key in due order, only the due index gives that
 * order without a sort (tests/t/064_round_work.pl checks the plan).
 */
bool
keys_due(MappingDef *m)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	bool		isnull;
	char	   *query;
	bool		due;

	/* the due queue (1.3), or older SQL's sync_state (worker.c) */
	query = psprintf("SELECT COALESCE((SELECT s.next_attempt_at <= pg_catalog.now()"
					 " FROM %s s"
					 " WHERE s.mapping_id = $1 AND s.state = 'pending'"
					 " AND s.next_attempt_at IS NOT NULL"
					 " AND s.next_attempt_at < 'infinity'"
					 " ORDER BY s.next_attempt_at LIMIT 1), false)",
					 erpcrm_due_relation());
	args[0] = Int32GetDatum(m->id);
	if (erpcrm_execute_kept_unsorted(query, 1, types, args, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look for keys due of mapping \"%s\"", m->name);
	due = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	pfree(query);
	return due;
}

/*
 * Step 1: claim due keys and read their rows, in one transaction.  Returns
 * false when no key was due.
 *
 * Unless its last claim in this cycle took a full batch, the due index of
 * the mapping is looked at first: an index probe costs a small part of a
 * claim that finds nothing, and most mappings have nothing due most of the
 * time (a commit wakes the worker for one key of one mapping).
 */
bool
claim_and_read(Batch *b, int limit)
{
	MappingDef *m = b->mapping;

	erpcrm_begin_step("erpcrm: claiming keys");
	erpcrm_worker_step("claiming keys");
	if ((!m->claimed_full && !keys_due(m)) || claim_keys(b, limit) == 0)
	{
		m->claimed_full = false;
		erpcrm_end_step();
		return false;
	}
	m->claimed_full = (b->nkeys >= limit);

	/* 1.3 SQL gives keys claimed ahead back (pipeline.c) */
	{
		Oid			types[2] = {INT4OID, TEXTARRAYOID};

		b->unclaim13 = OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
															makeString("_unclaim")),
												 2, types, true));
	}

	pgstat_report_activity(STATE_RUNNING, psprintf("erpcrm: reading %d rows of %s",
													b->nkeys, b->mapping->source));
	erpcrm_worker_step("reading its view");
	erpcrm_drop_forgotten(b);
	read_rows(b);
	erpcrm_fingerprint_keys(b);
	erpcrm_end_step();
	return true;
}

/* Where each part of a key's data is among the columns of the rows read. */
typedef struct ViewColumns
{
	int			erp_col;		/* erp_id */
	int			id_col;			/* the id property */
	int			explicit_col;	/* hubspot_id, or -1 */
	int			prev_col;		/* associations made before, or -1 */
	int		   *assoc_src;		/* per association: its column, or -1 */
	int		   *assoc_hs;		/* per association: its target's HubSpot id */
	int		   *prop_cols;		/* per property of the view: its column */
} ViewColumns;

/*
 * Sort the columns of the rows read: the view's own columns become the
 * properties sent (b->prop_names), followed by the associations sent as a
 * property; association columns, hubspot_id and the columns the read
 * query adds are set apart.
 */
static void
order_columns(Batch *b, TupleDesc desc, ViewColumns *cols)
{
	MappingDef *m = b->mapping;
	MemoryContext old;

	cols->erp_col = cols->id_col = cols->explicit_col = cols->prev_col = -1;
	cols->prop_cols = palloc(sizeof(int) * desc->natts);
	cols->assoc_src = palloc(sizeof(int) * (m->nassoc + 1));
	cols->assoc_hs = palloc(sizeof(int) * (m->nassoc + 1));
	for (int a = 0; a < m->nassoc; a++)
		cols->assoc_src[a] = cols->assoc_hs[a] = -1;

	old = MemoryContextSwitchTo(b->cxt);
	b->prop_names = palloc(sizeof(char *) * (desc->natts + m->nassoc));
	b->nprops = 0;
	for (int c = 0; c < desc->natts; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, c);
		const char *name = NameStr(att->attname);
		bool		is_assoc = false;

		if (att->attisdropped)
			continue;
		if (strncmp(name, "__erpcrm_assoc_", 15) == 0)
		{
			cols->assoc_hs[atoi(name + 15)] = c;
			continue;
		}
		if (strcmp(name, "__erpcrm_prev_assoc") == 0)
		{
			cols->prev_col = c;
			continue;
		}
		for (int a = 0; a < m->nassoc; a++)
			if (strcmp(m->assoc[a].column, name) == 0)
			{
				cols->assoc_src[a] = c;
				is_assoc = true;
			}
		if (is_assoc)
			continue;
		if (strcmp(name, "hubspot_id") == 0)
		{
			cols->explicit_col = c;
			continue;
		}
		if (strcmp(name, "erp_id") == 0)
			cols->erp_col = c;
		if (strcmp(name, m->id_property) == 0)
			cols->id_col = c;
		cols->prop_cols[b->nprops] = c;
		b->prop_names[b->nprops++] = pstrdup(name);
	}
	/* associations sent as a property: after the view's columns */
	b->nviewprops = b->nprops;
	for (int a = 0; a < m->nassoc; a++)
		if (m->assoc[a].as_property != NULL)
			b->prop_names[b->nprops++] = pstrdup(m->assoc[a].as_property);
	MemoryContextSwitchTo(old);

	if (cols->erp_col < 0 || cols->id_col < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("mapping view %s of mapping \"%s\" lost its column \"%s\"",
						m->source, m->name, cols->erp_col < 0 ? "erp_id" : m->id_property),
				 errhint("Restore the column in the view, or redefine the mapping with erpcrm.map().")));
}

/*
 * Give each claimed key its row: property values, the explicit HubSpot id,
 * its associations.  A key whose row appears twice, or whose values HubSpot
 * cannot hold, gets its outcome (failed) here.
 */
static void
attach_rows(Batch *b, ViewRows *rows, ViewColumns *cols)
{
	MappingDef *m = b->mapping;
	TupleDesc	desc = rows->desc;

	for (uint64 r = 0; r < rows->nrows; r++)
	{
		HeapTuple	t = rows->rows[r];
		char	   *erp_id = SPI_getvalue(t, desc, cols->erp_col + 1);
		BatchKey   *key = NULL;
		MemoryContext spi_cxt;

		for (int k = 0; k < b->nkeys; k++)
			if (strcmp(b->keys[k].erp_id, erp_id) == 0)
			{
				key = &b->keys[k];
				break;
			}
		if (key == NULL)
			continue;			/* e.g. numeric 1.0 vs 1: not ours */

		spi_cxt = MemoryContextSwitchTo(b->cxt);
		if (key->in_view)
		{
			set_outcome(key, KO_FAILED, 0, "ERP_DUPLICATE_KEY",
						psprintf("erp_id \"%s\" appears more than once in %s", erp_id, m->source),
						NULL);
			MemoryContextSwitchTo(spi_cxt);
			continue;
		}
		key->in_view = true;
		key->values = palloc(sizeof(char *) * Max(b->nprops, 1));
		for (int p = 0; p < b->nviewprops; p++)
		{
			bool		isnull;
			int			c = cols->prop_cols[p];
			Datum		d = SPI_getbinval(t, desc, c + 1, &isnull);
			const char *problem;

			key->values[p] = erpcrm_property_value(d, isnull,
												   TupleDescAttr(desc, c)->atttypid,
												   &problem);
			if (key->values[p] == NULL)
				value_failed(key, b->prop_names[p], "ERP_VALUE_NOT_REPRESENTABLE",
							 psprintf("property \"%s\": %s", b->prop_names[p], problem));
			else if (strlen(key->values[p]) > ERPCRM_MAX_VALUE_CHARS &&
					 erpcrm_value_chars(key->values[p]) > ERPCRM_MAX_VALUE_CHARS)
				value_failed(key, b->prop_names[p], "ERP_VALUE_TOO_LONG",
							 psprintf("property \"%s\" is %d characters long; HubSpot takes at most %d",
									  b->prop_names[p], erpcrm_value_chars(key->values[p]),
									  ERPCRM_MAX_VALUE_CHARS));
			if (key->values[p] == NULL)
				key->values[p] = "";
			if (c == cols->id_col)
				key->id_value = key->values[p];
		}
		if (cols->explicit_col >= 0)
		{
			char	   *v = SPI_getvalue(t, desc, cols->explicit_col + 1);

			key->explicit_id = (v && v[0]) ? pstrdup(v) : NULL;
		}
		if (cols->prev_col >= 0)
			key->prev_assoc = SPI_getvalue(t, desc, cols->prev_col + 1);
		key->assoc_key = palloc0(sizeof(char *) * Max(m->nassoc, 1));
		key->assoc_to = palloc0(sizeof(char *) * Max(m->nassoc, 1));
		for (int a = 0; a < m->nassoc; a++)
		{
			if (cols->assoc_src[a] >= 0)
				key->assoc_key[a] = SPI_getvalue(t, desc, cols->assoc_src[a] + 1);
			if (cols->assoc_hs[a] >= 0)
				key->assoc_to[a] = SPI_getvalue(t, desc, cols->assoc_hs[a] + 1);
		}
		/* association properties: the target's HubSpot id, "" when none */
		{
			int			p = b->nviewprops;

			for (int a = 0; a < m->nassoc; a++)
				if (m->assoc[a].as_property != NULL)
					key->values[p++] = key->assoc_to[a] ? key->assoc_to[a] : "";
		}
		MemoryContextSwitchTo(spi_cxt);
	}
}

/*
 * A batch of n keys of mapping m (their erp_ids for the caller to fill in),
 * in cxt, whose outcome goes to *out, cleared: for work other than a
 * delivery that reads rows or calls HubSpot (preview, fingerprints,
 * reconcile, owners, erasures).
 */
void
init_batch(Batch *b, MappingDef *m, DeliveryOutcome *out, MemoryContext cxt, int n)
{
	memset(b, 0, sizeof(*b));
	memset(out, 0, sizeof(*out));
	b->mapping = m;
	b->outcome = out;
	b->cxt = cxt;
	b->nkeys = n;
	b->keys = n > 0 ? MemoryContextAllocZero(cxt, sizeof(BatchKey) * n) : NULL;
}

/*
 * Read the current rows of the batch's keys from the mapping view, as its
 * owner, and fill in each key (values, associations, explicit id).  SPI is
 * connected and a snapshot is active; what the keys keep goes into b->cxt.
 * The worker calls it for the keys it claimed, and erpcrm.preview() for
 * one key.
 */
void
read_rows(Batch *b)
{
	MappingDef *m = b->mapping;
	Oid			argtypes[1] = {TEXTARRAYOID};
	char	   *query;
	int			ret;
	ViewRows	rows;
	ViewColumns cols;

	{
		/* 1.2 SQL keeps archived keys and missing links apart */
		Oid			types[4] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

		b->links12 = OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
														  makeString("_links_done")),
											   4, types, true));
	}
	{
		Oid			types[1] = {TEXTOID};

		b->forget13 = OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
														   makeString("_key_hash")),
												1, types, true));
	}
	query = build_read_query(m, b->links12, b->forget13);
	{
		SPIPlanPtr	plan;
		ErpcrmSavedUser saved;
		uint64		misses;

		/*
		 * The view is parsed and planned as the mapping's owner, in a
		 * security-restricted operation, as it is read (read_keys): its
		 * schema needs no grant to us, and its functions (also those folded
		 * to constants while planning) never run with our privileges.
		 */
		if (OidIsValid(m->owner))
			erpcrm_as_owner_begin(m->owner, &saved);
		plan = read_plan(m->id, m->owner, query, argtypes);
		if (OidIsValid(m->owner))
			erpcrm_as_owner_end(&saved);

		/* an error in one row fails that key alone (see read_view) */
		lock_watched_tables(m);
		misses = erpcrm_owner_misses;
		read_view(b, plan, b->cxt, &rows);
		b->owner_misses = erpcrm_owner_misses - misses;
	}
	if (rows.desc == NULL)
	{
		/* no key could be read: each has its outcome already */
		b->prop_names = palloc(sizeof(char *));
		return;
	}

	order_columns(b, rows.desc, &cols);
	attach_rows(b, &rows, &cols);

	/* keys whose first match search found nothing */
	if (b->links12 && m->match_property != NULL)
	{
		Oid			types[3] = {INT4OID, TEXTARRAYOID, INT4OID};
		Datum		sargs[3];
		List	   *all = NIL;

		for (int k = 0; k < b->nkeys; k++)
			if (b->keys[k].in_view && b->keys[k].known_hubspot_id == NULL)
				all = lappend(all, b->keys[k].erp_id);
		if (all != NIL)
		{
			sargs[0] = Int32GetDatum(m->id);
			sargs[1] = text_array(all);
			sargs[2] = Int32GetDatum(ERPCRM_SEARCH_SETTLE_MS);
			ret = erpcrm_execute_kept("SELECT erpcrm._searched_keys($1, $2, $3)",
										3, types, sargs, NULL, true, 0);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._searched_keys failed: %s", SPI_result_code_string(ret));
			for (uint64 r = 0; r < SPI_processed; r++)
			{
				char	   *erp_id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

				for (int k = 0; k < b->nkeys; k++)
					if (strcmp(b->keys[k].erp_id, erp_id) == 0)
						b->keys[k].searched_once = true;
			}
		}
	}

	/* keys out of their view whose object erpcrm archived already */
	if (b->links12)
	{
		List	   *gone = NIL;

		for (int k = 0; k < b->nkeys; k++)
			if (!b->keys[k].in_view && b->keys[k].known_hubspot_id != NULL)
				gone = lappend(gone, b->keys[k].erp_id);
		if (gone != NIL)
		{
			Oid			types[2] = {INT4OID, TEXTARRAYOID};
			Datum		gargs[2];

			gargs[0] = Int32GetDatum(m->id);
			gargs[1] = text_array(gone);
			ret = erpcrm_execute_kept("SELECT erpcrm._archived_keys($1, $2)",
										2, types, gargs, NULL, true, 0);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._archived_keys failed: %s", SPI_result_code_string(ret));
			for (uint64 r = 0; r < SPI_processed; r++)
			{
				char	   *erp_id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

				for (int k = 0; k < b->nkeys; k++)
					if (!b->keys[k].in_view && strcmp(b->keys[k].erp_id, erp_id) == 0)
						b->keys[k].already_archived = true;
			}
		}
	}
}

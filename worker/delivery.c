/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  One delivery batch of one mapping:
 *
 *	  1. in a transaction: claim due keys (erpcrm._claim) and read their
 *		 current rows from the mapping view in one query, together with the
 *		 HubSpot ids of the objects they are associated to; commit;
 *	  2. with no transaction open: HubSpot batch upsert (by the id property),
 *		 batch update (rows that carry a hubspot_id), batch archive (keys
 *		 that left the view), then the associations (v4);
 *	  3. in a new transaction: record every key's outcome (erpcrm._done,
 *		 erpcrm._error) and every call (erpcrm._log_call).
 *
 * HubSpot's refusals of single inputs are rows in sync_state, not ERRORs.
 * Everything is allocated in a memory context that is deleted after the
 * batch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "activity.h"
#include "client.h"
#include "delivery.h"
#include "erpcrm.h"
#include "hubspot.h"
#include "values.h"

/* What happened to one key. */
typedef enum KeyOutcome
{
	KO_NONE = 0,				/* not decided yet */
	KO_SYNCED,					/* written to HubSpot */
	KO_ARCHIVED,				/* archived in HubSpot (or never there) */
	KO_GONE_KEPT,				/* left the view, mapping keeps objects */
	KO_FAILED,					/* refused by HubSpot: parked */
	KO_RETRY,					/* transient: backoff */
	KO_WAIT,					/* waits for another object or the limit */
} KeyOutcome;

typedef struct BatchKey
{
	char	   *erp_id;
	char	   *known_hubspot_id;	/* from sync_state */
	bool		in_view;
	/* from the view row */
	char	   *id_value;		/* value of the id property */
	char	   *explicit_id;	/* hubspot_id column: update this object */
	char	  **values;			/* property values, UTF-8 */
	char	  **assoc_key;		/* target erp_id per association, or NULL */
	char	  **assoc_to;		/* target HubSpot id per association */
	char	   *prev_assoc;		/* associations made before (1.1) */
	char	   *new_assoc;		/* associations made now */
	bool		is_new;			/* HubSpot created the object just now */
	bool		already_archived;	/* erpcrm archived its object before (1.2) */
	bool		searched_once;	/* a match search found nothing before (1.2) */
	ErrorData  *read_error;		/* reading its row failed (alone) */
	bool		bounded;		/* a retry that only this key needs: parked
								 * as failed after erpcrm.max_attempts */
	bool		alone_5xx;		/* sent alone, answered with a 5xx */
	/* outcome */
	KeyOutcome	outcome;
	char	   *hubspot_id;
	int			http_status;
	char	   *category;
	char	   *message;
	char	   *correlation_id;
	long		wait_ms;
} BatchKey;

typedef struct CallLog
{
	TimestampTz called_at;
	const char *method;
	char	   *path;
	long		status;
	double		latency_ms;
	int			inputs;
	char	   *category;
	char	   *correlation_id;
} CallLog;

typedef struct Batch
{
	MappingDef *mapping;
	DeliveryOutcome *outcome;
	int			nkeys;
	BatchKey   *keys;
	int			nprops;			/* view columns + association properties */
	int			nviewprops;		/* view columns only */
	char	  **prop_names;
	List	   *calls;			/* CallLog * */
	bool		links12;		/* the installed SQL records links (1.2) */
	int			ok_calls;		/* calls HubSpot answered with 2xx */
	int			split_5xx;		/* > 0: inside a split after a 5xx */
	uint64		owner_misses;	/* rows read whose owner e-mail is unknown */
	MemoryContext cxt;			/* the batch's memory */
} Batch;

static SPIPlanPtr claim_plan = NULL;

/* HubSpot's search shows new records after a few seconds */
#define ERPCRM_SEARCH_SETTLE_MS 5000

static Datum text_array(List *strings);
static void read_rows(Batch *b);
static void send_objects(Batch *b, BatchKey **keys, int n, bool by_explicit);
static void send_split_5xx(Batch *b, BatchKey **keys, int n, bool by_explicit,
						   bool proven, bool transient_before);

/* ----------------------------------------------------------------
 * Helpers
 * ----------------------------------------------------------------
 */
static void
set_outcome(BatchKey *key, KeyOutcome outcome, int status,
			const char *category, const char *message,
			const char *correlation_id)
{
	key->outcome = outcome;
	key->http_status = status;
	key->category = category ? pstrdup(category) : NULL;
	key->message = message ? pstrdup(message) : NULL;
	key->correlation_id = (correlation_id && correlation_id[0]) ?
		pstrdup(correlation_id) : NULL;
}

static char *
truncate_message(const char *s)
{
	/* keep errors readable in erpcrm.failures, cut at a character boundary */
	if (s == NULL)
		return NULL;
	if (!pg_verify_mbstr(PG_UTF8, s, strlen(s), true))
		return pstrdup("(HubSpot's text is not valid UTF-8)");
	if (strlen(s) <= 2000)
		return pstrdup(s);
	return psprintf("%.*s...", pg_encoding_mbcliplen(PG_UTF8, s, strlen(s), 2000), s);
}

/* ----------------------------------------------------------------
 * 1. Claim and read
 * ----------------------------------------------------------------
 */
static char *
build_read_query(MappingDef *m, bool links12)
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
						 " CASE WHEN v.%s IS NULL OR EXISTS (SELECT FROM %s AS t"
						 "  WHERE (t.erp_id)::text = (v.%s)::text) THEN NULL ELSE '' END)"
						 " AS __erpcrm_assoc_%d",
						 m->assoc[i].target_id, col, col,
						 m->assoc[i].target_source, col, i);
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
		ret = SPI_execute_plan(plan, &arg, NULL, true, 0);
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

static bool
claim_and_read(Batch *b, int limit)
{
	MappingDef *m = b->mapping;
	MemoryContext batch_cxt = CurrentMemoryContext;
	Datum		args[2];
	int			ret;
	uint64		n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "erpcrm: claiming keys");
	erpcrm_worker_step("claiming keys");

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

	n = SPI_processed;
	if (n == 0)
	{
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		MemoryContextSwitchTo(batch_cxt);	/* commit left us in TopMemoryContext */
		return false;
	}

	/* keys, copied out of SPI's memory */
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(batch_cxt);

		b->nkeys = (int) n;
		b->keys = palloc0(sizeof(BatchKey) * n);
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];

			b->keys[i].erp_id = SPI_getvalue(t, SPI_tuptable->tupdesc, 1);
			b->keys[i].known_hubspot_id = SPI_getvalue(t, SPI_tuptable->tupdesc, 2);
		}
		MemoryContextSwitchTo(spi_cxt);
	}

	pgstat_report_activity(STATE_RUNNING, psprintf("erpcrm: reading %d rows of %s", (int) n, m->source));
	erpcrm_worker_step("reading its view");
	read_rows(b);

	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(batch_cxt);	/* commit left us in TopMemoryContext */
	return true;
}

/*
 * Read the current rows of the batch's keys from the mapping view, as its
 * owner, and fill in each key (values, associations, explicit id).  SPI is
 * connected and a snapshot is active; what the keys keep goes into b->cxt.  The worker calls it for the keys it claimed, and
 * erpcrm.preview() for one key.
 */
static void
read_rows(Batch *b)
{
	MappingDef *m = b->mapping;
	MemoryContext batch_cxt = b->cxt;
	Oid			argtypes[1] = {TEXTARRAYOID};
	char	   *query;
	int			ret;
	ViewRows	rows;
	TupleDesc	desc;
	int			erp_col = -1,
				id_col = -1,
				explicit_col = -1,
				prev_col = -1;
	int		   *assoc_src;
	int		   *assoc_hs;
	int		   *prop_cols;

	{
		/* 1.2 SQL keeps archived keys and missing links apart */
		Oid			types[4] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

		b->links12 = OidIsValid(LookupFuncName(list_make2(makeString("erpcrm"),
														  makeString("_links_done")),
											   4, types, true));
	}
	query = build_read_query(m, b->links12);
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
		misses = erpcrm_owner_misses;
		read_view(b, plan, batch_cxt, &rows);
		b->owner_misses = erpcrm_owner_misses - misses;
	}
	if (rows.desc == NULL)
	{
		/* no key could be read: each has its outcome already */
		b->prop_names = palloc(sizeof(char *));
		return;
	}

	/* classify the view's columns */
	desc = rows.desc;
	prop_cols = palloc(sizeof(int) * desc->natts);
	assoc_src = palloc(sizeof(int) * (m->nassoc + 1));
	assoc_hs = palloc(sizeof(int) * (m->nassoc + 1));
	for (int a = 0; a < m->nassoc; a++)
		assoc_src[a] = assoc_hs[a] = -1;

	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(batch_cxt);

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
				assoc_hs[atoi(name + 15)] = c;
				continue;
			}
			if (strcmp(name, "__erpcrm_prev_assoc") == 0)
			{
				prev_col = c;
				continue;
			}
			for (int a = 0; a < m->nassoc; a++)
				if (strcmp(m->assoc[a].column, name) == 0)
				{
					assoc_src[a] = c;
					is_assoc = true;
				}
			if (is_assoc)
				continue;
			if (strcmp(name, "hubspot_id") == 0)
			{
				explicit_col = c;
				continue;
			}
			if (strcmp(name, "erp_id") == 0)
				erp_col = c;
			if (strcmp(name, m->id_property) == 0)
				id_col = c;
			prop_cols[b->nprops] = c;
			b->prop_names[b->nprops++] = pstrdup(name);
		}
		/* associations sent as a property: after the view's columns */
		b->nviewprops = b->nprops;
		for (int a = 0; a < m->nassoc; a++)
			if (m->assoc[a].as_property != NULL)
				b->prop_names[b->nprops++] = pstrdup(m->assoc[a].as_property);
		MemoryContextSwitchTo(spi_cxt);
	}
	if (erp_col < 0 || id_col < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("mapping view %s of mapping \"%s\" lost its column \"%s\"",
						m->source, m->name, erp_col < 0 ? "erp_id" : m->id_property),
				 errhint("Restore the column in the view, or redefine the mapping with erpcrm.map().")));

	/* rows: match them to claimed keys */
	for (uint64 r = 0; r < rows.nrows; r++)
	{
		HeapTuple	t = rows.rows[r];
		char	   *erp_id = SPI_getvalue(t, desc, erp_col + 1);
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

		spi_cxt = MemoryContextSwitchTo(batch_cxt);
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
			int			c = prop_cols[p];
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
			if (c == id_col)
				key->id_value = key->values[p];
		}
		if (explicit_col >= 0)
		{
			char	   *v = SPI_getvalue(t, desc, explicit_col + 1);

			key->explicit_id = (v && v[0]) ? pstrdup(v) : NULL;
		}
		if (prev_col >= 0)
			key->prev_assoc = SPI_getvalue(t, desc, prev_col + 1);
		key->assoc_key = palloc0(sizeof(char *) * Max(m->nassoc, 1));
		key->assoc_to = palloc0(sizeof(char *) * Max(m->nassoc, 1));
		for (int a = 0; a < m->nassoc; a++)
		{
			if (assoc_src[a] >= 0)
				key->assoc_key[a] = SPI_getvalue(t, desc, assoc_src[a] + 1);
			if (assoc_hs[a] >= 0)
				key->assoc_to[a] = SPI_getvalue(t, desc, assoc_hs[a] + 1);
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
			ret = SPI_execute_with_args("SELECT erpcrm._searched_keys($1, $2, $3)",
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
			ret = SPI_execute_with_args("SELECT erpcrm._archived_keys($1, $2)",
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

/* ----------------------------------------------------------------
 * 2. HubSpot calls
 * ----------------------------------------------------------------
 */

/*
 * HubSpot resets the daily budget at midnight in the portal's time zone.
 * When the budget runs low (under a tenth, or under 1,000 calls) or is
 * spent, the portal's time zone is read once from the account details, and
 * the next midnight there is given to the limiter, which otherwise waits
 * for midnight UTC.
 */
static char *portal_time_zone = NULL;
static TimestampTz portal_time_zone_tried = 0;

static TimestampTz
next_portal_midnight(const char *tz, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz reset = 0;

	PG_TRY();
	{
		Datum		today = DirectFunctionCall3(timestamptz_trunc_zone,
												CStringGetTextDatum("day"),
												TimestampTzGetDatum(now),
												CStringGetTextDatum(tz));

		/* 36 hours after today's midnight is tomorrow, whatever DST does */
		reset = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_trunc_zone,
														CStringGetTextDatum("day"),
														TimestampTzGetDatum(DatumGetTimestampTz(today) +
																			36 * USECS_PER_HOUR),
														CStringGetTextDatum(tz)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		reset = 0;				/* a time zone PostgreSQL does not know */
	}
	PG_END_TRY();
	return reset;
}

static void
note_daily_reset(Batch *b, const HsResponse *resp, TimestampTz now, bool spent)
{
	bool		low = resp->transport_error == 0 && resp->rl_daily > 0 &&
		resp->rl_daily_remaining >= 0 &&
		resp->rl_daily_remaining < Max(1000, resp->rl_daily / 10);

	if (!low && !spent)
		return;
	if (hs_rate_daily_reset(now) != 0)
		return;					/* known, still ahead */
	if (portal_time_zone == NULL)
	{
		HsResponse	tz_resp;
		const char *fields[1] = {"timeZone"};
		char	   *v[1] = {NULL};
		CallLog    *log = palloc0(sizeof(CallLog));

		if (portal_time_zone_tried != 0 && now - portal_time_zone_tried < USECS_PER_HOUR)
			return;
		portal_time_zone_tried = now;
		hs_rate_note_call(now);
		hs_http_request("GET", "/account-info/v3/details", NULL, &tz_resp);
		if (tz_resp.aborted)
			CHECK_FOR_INTERRUPTS();
		log->called_at = now;
		log->method = "GET";
		log->path = pstrdup("/account-info/v3/details");
		log->status = tz_resp.transport_error ? 0 : tz_resp.status;
		log->latency_ms = tz_resp.elapsed_ms;
		log->correlation_id = tz_resp.correlation_id[0] ? pstrdup(tz_resp.correlation_id) : NULL;
		b->calls = lappend(b->calls, log);
		erpcrm_worker_note_call(&tz_resp, tz_resp.transport_error == 0 && tz_resp.status == 429);
		if (tz_resp.transport_error == 0 && tz_resp.status == 200 &&
			hs_parse_fields(tz_resp.body, tz_resp.body_len, 1, fields, v) &&
			v[0] != NULL && v[0][0] != '\0')
			portal_time_zone = MemoryContextStrdup(TopMemoryContext, v[0]);
		if (portal_time_zone == NULL)
			return;
	}
	{
		TimestampTz reset = next_portal_midnight(portal_time_zone, now);

		if (reset > now)
			hs_rate_set_daily_reset(reset, now);
	}
}

/*
 * Make one call, honouring the client-side rate limit and waiting out 429s
 * that ask for a short pause.  Returns false when the call got no usable
 * answer that the caller should look at (the batch outcome says why).
 */
static void
call_hubspot(Batch *b, const char *method, const char *path,
			 const char *body, int ninputs, HsResponse *resp)
{
	int			rate_retries = 0;

	for (;;)
	{
		TimestampTz now;
		long		delay;
		CallLog    *log;

		/* calls sessions made count in the same budget */
		erpcrm_worker_absorb_session_calls();
		now = GetCurrentTimestamp();
		/* a place in the window is taken at once (databases may share it) */
		delay = hs_rate_take(now);

		if (delay > 0)
		{
			if (delay > 60000)
			{
				/* a long wait (daily limit): give the keys back */
				memset(resp, 0, sizeof(*resp));
				resp->status = 429;
				b->outcome->blocked_until = TimestampTzPlusMilliseconds(now, delay);
				return;
			}
			erpcrm_set_state(ERPCRM_WORKER_RATE_LIMITED, "waiting for the rate limit window");
			erpcrm_worker_sleep(delay, PG_WAIT_EXTENSION);
			continue;
		}

		erpcrm_set_state(ERPCRM_WORKER_SENDING, path);
		erpcrm_worker_step("calling HubSpot");
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("erpcrm: %s %s (%d inputs)", method, path, ninputs));
		hs_http_request(method, path, body, resp);
		if (resp->aborted)
			CHECK_FOR_INTERRUPTS();
		log = palloc0(sizeof(CallLog));
		log->called_at = now;
		now = GetCurrentTimestamp();
		hs_rate_note_response(resp, now);

		log->method = method;
		log->path = pstrdup(path);
		log->status = resp->transport_error ? 0 : resp->status;
		log->latency_ms = resp->elapsed_ms;
		log->inputs = ninputs;
		log->correlation_id = resp->correlation_id[0] ? pstrdup(resp->correlation_id) : NULL;
		b->calls = lappend(b->calls, log);
		note_daily_reset(b, resp, now, false);

		if (resp->transport_error == 0 && resp->status == 429)
		{
			HsError		err;
			TimestampTz until;

			hs_parse_error(resp->body, resp->body_len, &err);
			log->category = pstrdup(err.category[0] ? err.category : "RATE_LIMIT");
			until = hs_rate_note_429(resp, err.policy_name, now);
			if (err.policy_name != NULL && strcmp(err.policy_name, "DAILY") == 0)
			{
				/* wait for the portal's reset, not midnight UTC */
				note_daily_reset(b, resp, now, true);
				until = TimestampTzPlusMilliseconds(now, hs_rate_delay_ms(now));
			}
			erpcrm_worker_note_call(resp, true);
			if (++rate_retries <= 5 && until - now <= 60 * USECS_PER_SEC)
				continue;		/* the limiter now waits it out */
			b->outcome->blocked_until = until;
			return;
		}
		erpcrm_worker_note_call(resp, false);
		if (resp->transport_error == 0 && resp->status >= 200 && resp->status < 300)
			b->ok_calls++;
		if (resp->transport_error == 0 && resp->status >= 400)
		{
			HsError		err;

			hs_parse_error(resp->body, resp->body_len, &err);
			if (err.category[0])
				log->category = pstrdup(err.category);
		}
		else if (resp->transport_error != 0)
			log->category = pstrdup("NETWORK");
		return;
	}
}

/* Mark keys after an answer that concerns the whole call. */
static void
whole_call_outcome(Batch *b, BatchKey **keys, int n, HsResponse *resp,
				   const char *what)
{
	const char *msg;
	HsError		err;
	KeyOutcome	outcome;
	int			status = resp->transport_error ? 0 : (int) resp->status;

	memset(&err, 0, sizeof(err));
	if (resp->transport_error)
	{
		msg = psprintf("%s: no answer from HubSpot: %s", what, resp->transport_message);
		outcome = KO_RETRY;
		b->outcome->transient = true;
		erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], outcome, 0, "NETWORK", msg, NULL);
		return;
	}
	hs_parse_error(resp->body, resp->body_len, &err);
	if (status == 429)
	{
		for (int i = 0; i < n; i++)
		{
			set_outcome(keys[i], KO_WAIT, 429, "RATE_LIMIT",
						"waiting for HubSpot's rate limit", resp->correlation_id);
			keys[i]->wait_ms = Max(1000, (b->outcome->blocked_until - GetCurrentTimestamp()) / 1000);
		}
		return;
	}
	if (status == 401 || status == 403)
	{
		msg = psprintf("HubSpot refused the access token (%d %s): %s",
					   status, err.category[0] ? err.category : "",
					   err.message[0] ? err.message : "no message");
		b->outcome->auth_failed = true;
		erpcrm_clip(b->outcome->auth_message, msg, sizeof(b->outcome->auth_message));
		for (int i = 0; i < n; i++)
		{
			set_outcome(keys[i], KO_WAIT, status, err.category, msg, resp->correlation_id);
			/* the worker as a whole waits; the key is due again at once */
			keys[i]->wait_ms = 1000;
		}
		return;
	}
	if (status >= 500 || status < 200 || (status >= 200 && status < 300))
	{
		/* 5xx, or a success that made no sense */
		msg = (status >= 200 && status < 300) ?
			psprintf("%s: HubSpot's answer (%d) could not be understood", what, status) :
			psprintf("%s: HubSpot answered %d%s%s", what, status,
					 err.message[0] ? ": " : "", truncate_message(err.message));
		b->outcome->transient = true;
		erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], KO_RETRY, status,
						err.category[0] ? err.category : "HTTP_ERROR", msg,
						resp->correlation_id);
		return;
	}
	/* 4xx about this input (a batch of one) */
	for (int i = 0; i < n; i++)
		set_outcome(keys[i], KO_FAILED, status,
					err.category[0] ? err.category : "HTTP_ERROR",
					truncate_message(err.message[0] ? err.message : resp->body),
					resp->correlation_id);
}

static BatchKey *
find_key_by(BatchKey **keys, int n, const char *value, bool by_explicit)
{
	for (int i = 0; i < n; i++)
	{
		const char *v = by_explicit ? keys[i]->explicit_id : keys[i]->id_value;

		if (v != NULL && strcmp(v, value) == 0)
			return keys[i];
	}
	return NULL;
}

/* The call that upserts (or updates by HubSpot id) these keys: its body. */
static char *
objects_request(Batch *b, BatchKey **keys, int n, bool by_explicit, char **path)
{
	MappingDef *m = b->mapping;
	HsJsonBody *body = hs_body_new();

	for (int i = 0; i < n; i++)
	{
		if (by_explicit)
			hs_body_add_update(body, keys[i]->explicit_id, b->nprops,
							   (const char *const *) b->prop_names,
							   (const char *const *) keys[i]->values);
		else
			hs_body_add_upsert(body, m->id_property, keys[i]->id_value,
							   b->nprops,
							   (const char *const *) b->prop_names,
							   (const char *const *) keys[i]->values);
	}
	*path = psprintf("%s/%s/batch/%s", HS_OBJECTS_PREFIX, m->object_type,
					 by_explicit ? "update" : "upsert");
	return hs_body_finish(body);
}

/*
 * Upsert (by_explicit false) or update by HubSpot id (true) these keys.  A
 * 4xx that rejects the whole batch without naming inputs is split in halves
 * until the bad input stands alone.
 */
static void
send_objects(Batch *b, BatchKey **keys, int n, bool by_explicit)
{
	MappingDef *m = b->mapping;
	HsResponse	resp;
	char	   *path;
	char	   *json;
	const char *why = NULL;
	HsBatchResult result;

	if (n == 0)
		return;

	json = objects_request(b, keys, n, by_explicit, &path);

	call_hubspot(b, "POST", path, json, n, &resp);

	if (resp.transport_error == 0 &&
		(resp.status == 200 || resp.status == 201 || resp.status == 207))
	{
		if (!hs_parse_batch(resp.body, resp.body_len,
							by_explicit ? NULL : m->id_property, &result, &why))
		{
			char	   *msg = psprintf("HubSpot's answer to %s could not be understood: %s",
									   path, why ? why : "unknown reason");

			b->outcome->transient = true;
			erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
			for (int i = 0; i < n; i++)
				set_outcome(keys[i], KO_RETRY, (int) resp.status, "BAD_ANSWER", msg,
							resp.correlation_id);
			return;
		}
		for (int r = 0; r < result.nresults; r++)
		{
			BatchKey   *key = find_key_by(keys, n, result.results[r].key, by_explicit);

			if (key == NULL || key->outcome != KO_NONE)
				continue;
			set_outcome(key, KO_SYNCED, (int) resp.status, NULL, NULL, NULL);
			key->hubspot_id = result.results[r].hubspot_id;
			key->is_new = result.results[r].is_new;
		}
		for (int e = 0; e < result.nerrors; e++)
		{
			HsErrorItem *item = &result.errors[e];

			for (int j = 0; j < item->nids; j++)
			{
				BatchKey   *key = find_key_by(keys, n, item->ids[j], by_explicit);

				if (key == NULL || key->outcome != KO_NONE)
					continue;
				set_outcome(key, KO_FAILED, item->status ? item->status : 400,
							item->category[0] ? item->category : "VALIDATION_ERROR",
							truncate_message(item->message), resp.correlation_id);
			}
		}
		for (int i = 0; i < n; i++)
			if (keys[i]->outcome == KO_NONE)
				set_outcome(keys[i], KO_RETRY, (int) resp.status, "BAD_ANSWER",
							"HubSpot's answer did not mention this input",
							resp.correlation_id);
		return;
	}

	if (resp.transport_error == 0 && resp.status >= 400 && resp.status < 500 &&
		resp.status != 401 && resp.status != 403 && resp.status != 429)
	{
		HsError		err;
		int			named = 0;

		hs_parse_error(resp.body, resp.body_len, &err);
		/* inputs the error names fail; the rest are tried again now */
		for (int j = 0; j < err.nids; j++)
		{
			BatchKey   *key = find_key_by(keys, n, err.ids[j], by_explicit);

			if (key != NULL && key->outcome == KO_NONE)
			{
				set_outcome(key, KO_FAILED, (int) resp.status,
							err.category[0] ? err.category : "HTTP_ERROR",
							truncate_message(err.message), resp.correlation_id);
				named++;
			}
		}
		if (named > 0 || n > 1)
		{
			BatchKey  **rest = palloc(sizeof(BatchKey *) * n);
			int			nrest = 0;

			for (int i = 0; i < n; i++)
				if (keys[i]->outcome == KO_NONE)
					rest[nrest++] = keys[i];
			if (named > 0)
				send_objects(b, rest, nrest, by_explicit);
			else
			{
				send_objects(b, rest, nrest / 2, by_explicit);
				send_objects(b, rest + nrest / 2, nrest - nrest / 2, by_explicit);
			}
			return;
		}
	}
	/* 503 says HubSpot is unavailable; other 5xx may be about an input */
	if (resp.transport_error == 0 && resp.status >= 500 && resp.status != 503 &&
		n > 1 && b->split_5xx == 0)
	{
		send_split_5xx(b, keys, n, by_explicit, false, b->outcome->transient);
		return;
	}
	whole_call_outcome(b, keys, n, &resp, path);
	/* alone: was it found failing alone before?  (record() asks) */
	if (n == 1 && b->split_5xx == 0 && keys[0]->outcome == KO_RETRY &&
		keys[0]->http_status >= 500 && keys[0]->http_status != 503)
		keys[0]->alone_5xx = true;
}

#define INPUT_FAILING "HubSpot fails on this input alone: "

/* HubSpot fails on this input, and not on others: a bounded retry. */
static void
mark_input_failing(BatchKey *key)
{
	key->bounded = true;
	if (key->message == NULL || strncmp(key->message, INPUT_FAILING, strlen(INPUT_FAILING)) != 0)
		key->message = psprintf("%s%s", INPUT_FAILING, key->message ? key->message : "");
}

/*
 * A batch that HubSpot answered with a 5xx: is HubSpot failing, or is it one
 * input that HubSpot cannot take?  The batch is sent again in halves.  When
 * no half succeeds either, HubSpot is failing: the keys wait for it, and the
 * worker backs off.  When a half succeeds, the halves that failed are split
 * again, until the inputs that HubSpot refuses stand alone.  Those are
 * retried on their own (the others are delivered), and parked as failed
 * after erpcrm.max_attempts attempts.
 */
static void
send_split_5xx(Batch *b, BatchKey **keys, int n, bool by_explicit,
			   bool proven, bool transient_before)
{
	int			h = n / 2;
	int			ok_before = b->ok_calls;
	struct
	{
		BatchKey  **keys;
		int			n;
	}			half[2] = {{keys, h}, {keys + h, n - h}};

	b->split_5xx++;
	send_objects(b, half[0].keys, half[0].n, by_explicit);
	send_objects(b, half[1].keys, half[1].n, by_explicit);
	b->split_5xx--;
	if (b->ok_calls == ok_before && !proven)
		return;					/* nothing got through: HubSpot is failing */

	/* HubSpot answers: the 5xx belong to the inputs of the failed halves */
	b->outcome->transient = transient_before;
	for (int i = 0; i < 2; i++)
	{
		bool		failed_5xx = half[i].n > 0;

		for (int k = 0; k < half[i].n; k++)
			if (half[i].keys[k]->outcome != KO_RETRY ||
				half[i].keys[k]->http_status < 500 ||
				half[i].keys[k]->http_status == 503)
				failed_5xx = false;
		if (!failed_5xx)
			continue;
		if (half[i].n == 1)
		{
			mark_input_failing(half[i].keys[0]);
			continue;
		}
		for (int k = 0; k < half[i].n; k++)
			half[i].keys[k]->outcome = KO_NONE;
		send_split_5xx(b, half[i].keys, half[i].n, by_explicit, true,
					   transient_before);
	}
	/* other failures (no answer at all) still make the worker back off */
	b->outcome->transient = transient_before;
	for (int k = 0; k < n; k++)
		if (keys[k]->outcome == KO_RETRY && !keys[k]->bounded)
			b->outcome->transient = true;
}

static void
send_archives(Batch *b, BatchKey **keys, int n)
{
	HsJsonBody *body;
	HsResponse	resp;
	char	   *path;

	if (n == 0)
		return;

	/*
	 * Whether HubSpot lets a new object take the unique value of an archived
	 * one is not documented.  The id property is cleared before the archive,
	 * so that the key can come back as a new object either way.  An object
	 * gone already (404) is archived all the same.
	 */
	{
		const char *names[1] = {b->mapping->id_property};
		const char *values[1] = {""};

		body = hs_body_new();
		for (int i = 0; i < n; i++)
			hs_body_add_update(body, keys[i]->known_hubspot_id, 1, names, values);
		path = psprintf("%s/%s/batch/update", HS_OBJECTS_PREFIX, b->mapping->object_type);
		call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
		if (!(resp.transport_error == 0 &&
			  ((resp.status >= 200 && resp.status < 300) || resp.status == 404 ||
			   resp.status == 400)))
		{
			whole_call_outcome(b, keys, n, &resp, path);
			for (int i = 0; i < n; i++)
				if (keys[i]->outcome == KO_FAILED)
					keys[i]->outcome = KO_RETRY;	/* never parked for this */
			return;
		}
	}
	body = hs_body_new();
	for (int i = 0; i < n; i++)
		hs_body_add_archive(body, keys[i]->known_hubspot_id);
	path = psprintf("%s/%s/batch/archive", HS_OBJECTS_PREFIX, b->mapping->object_type);
	call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
	if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
	{
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], KO_ARCHIVED, (int) resp.status, NULL, NULL, NULL);
		return;
	}
	whole_call_outcome(b, keys, n, &resp, path);
}

/*
 * The target this key was associated to through column, per its recorded
 * association state ("column=id;column=id"), or NULL.
 */
static char *
previous_target(const char *state, const char *column)
{
	size_t		len = strlen(column);
	const char *p = state;

	while (p != NULL && *p)
	{
		const char *end = strchr(p, ';');
		size_t		item = end ? (size_t) (end - p) : strlen(p);

		if (item > len && strncmp(p, column, len) == 0 && p[len] == '=')
			return pnstrdup(p + len + 1, item - len - 1);
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

/* Mark keys after an association call that did not succeed. */
static void
association_failed(Batch *b, BatchKey **keys, int n, HsResponse *resp,
				   const char *path, AssocDef *def, int a)
{
	/* the objects are written; the association is retried with them */
	for (int i = 0; i < n; i++)
		keys[i]->outcome = KO_NONE;
	whole_call_outcome(b, keys, n, resp, path);
	for (int i = 0; i < n; i++)
		if (keys[i]->outcome == KO_FAILED)
			keys[i]->message = psprintf("association to %s \"%s\": %s",
										def->target_name,
										keys[i]->assoc_key[a] ? keys[i]->assoc_key[a] : "",
										keys[i]->message ? keys[i]->message : "");
}

/*
 * HubSpot's reason for refusing the association made from this object, or
 * NULL when its errors name other objects.  Errors that name no object at
 * all concern every pair.
 */
static const char *
association_refusal(HsBatchResult *result, const char *from_id)
{
	for (int e = 0; e < result->nerrors; e++)
	{
		HsErrorItem *item = &result->errors[e];

		if (item->nids == 0)
			return item->message;
		for (int j = 0; j < item->nids; j++)
			if (from_id != NULL && strcmp(item->ids[j], from_id) == 0)
				return item->message;
	}
	return NULL;
}

/* The call that makes the associations of these keys (association a). */
static char *
association_request(Batch *b, AssocDef *def, int a, BatchKey **adds, int nadd,
					char **path)
{
	HsJsonBody *body = hs_body_new();

	for (int i = 0; i < nadd; i++)
		hs_body_add_association(body, adds[i]->hubspot_id, adds[i]->assoc_to[a],
								def->category, def->type_id);
	*path = psprintf("%s/%s/%s/batch/%s", HS_ASSOCIATIONS_PREFIX,
					 b->mapping->object_type, def->target_type,
					 def->type_id > 0 ? "create" : "associate/default");
	return hs_body_finish(body);
}

/*
 * Make the associations of these keys (association a).  A 4xx that refuses
 * the whole call without naming pairs is split in halves until the pair it
 * refuses stands alone, as for objects: one bad pair fails alone.
 */
static void
send_association_adds(Batch *b, AssocDef *def, int a, BatchKey **adds, int nadd)
{
	HsResponse	resp;
	char	   *path;
	char	   *json = association_request(b, def, a, adds, nadd, &path);

	call_hubspot(b, "POST", path, json, nadd, &resp);
	if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
	{
		HsBatchResult result;
		const char *why;

		/*
		 * errors inside a 200 (batch/associate/default has no 207) or a 207
		 * name the failed pairs
		 */
		if (hs_parse_batch(resp.body, resp.body_len, NULL, &result, &why) &&
			result.nerrors > 0)
		{
			for (int i = 0; i < nadd; i++)
			{
				const char *refusal = association_refusal(&result, adds[i]->hubspot_id);

				if (refusal == NULL)
					continue;	/* its pair was made */
				set_outcome(adds[i], KO_RETRY, resp.status, "ASSOCIATION",
							psprintf("association to %s \"%s\" was refused: %s",
									 def->target_name, adds[i]->assoc_key[a],
									 truncate_message(refusal)),
							resp.correlation_id);
				adds[i]->bounded = true;
			}
		}
		return;
	}
	if (resp.transport_error == 0 && resp.status >= 400 && resp.status < 500 &&
		resp.status != 401 && resp.status != 403 && resp.status != 429 &&
		nadd > 1)
	{
		send_association_adds(b, def, a, adds, nadd / 2);
		send_association_adds(b, def, a, adds + nadd / 2, nadd - nadd / 2);
		return;
	}
	association_failed(b, adds, nadd, &resp, path, def, a);
}

/*
 * Association a of a key just written: the target to associate it to now
 * (NULL: none), and the one it was associated to before (NULL: none).
 */
static void
association_change(BatchKey *key, AssocDef *def, int a, const char **to,
				   char **old)
{
	/* "" = the target left its view: no association to make */
	*to = (key->assoc_to[a] && key->assoc_to[a][0]) ? key->assoc_to[a] : NULL;
	*old = key->is_new ? NULL : previous_target(key->prev_assoc, def->column);
}

/*
 * Associate the objects just written to the objects their association
 * columns name, one call per association (up to 100 pairs each).  Where the
 * key's recorded state shows the same association already made, no call is
 * needed; where the target changed (a contact moved to another company), the
 * old association is removed.
 */
static void
send_associations(Batch *b)
{
	MappingDef *m = b->mapping;

	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		BatchKey  **adds;
		BatchKey  **removes;
		char	  **old_ids;
		int			nadd = 0;
		int			nremove = 0;
		HsJsonBody *remove_body;
		HsResponse	resp;
		char	   *path;

		if (def->as_property != NULL)
			continue;			/* sent as a property with the object */
		remove_body = hs_body_new();
		adds = palloc(sizeof(BatchKey *) * b->nkeys);
		removes = palloc(sizeof(BatchKey *) * b->nkeys);
		old_ids = palloc(sizeof(char *) * b->nkeys);
		for (int i = 0; i < b->nkeys; i++)
		{
			BatchKey   *key = &b->keys[i];
			const char *to;
			char	   *old;

			if (key->outcome != KO_SYNCED || key->hubspot_id == NULL ||
				key->assoc_to == NULL)
				continue;
			association_change(key, def, a, &to, &old);
			if (to != NULL && (old == NULL || strcmp(old, to) != 0))
				adds[nadd++] = key;
			if (old != NULL && (to == NULL || strcmp(old, to) != 0))
			{
				hs_body_add_association_archive(remove_body, key->hubspot_id, old);
				old_ids[nremove] = old;
				removes[nremove++] = key;
			}
		}

		if (nremove > 0)
		{
			path = psprintf("%s/%s/%s/batch/archive", HS_ASSOCIATIONS_PREFIX,
							m->object_type, def->target_type);
			call_hubspot(b, "POST", path, hs_body_finish(remove_body), nremove, &resp);
			if (!(resp.transport_error == 0 && resp.status >= 200 && resp.status < 300))
				association_failed(b, removes, nremove, &resp, path, def, a);
		}
		if (nadd > 0)
			send_association_adds(b, def, a, adds, nadd);
	}

	/* what is associated now, for the next change of these keys */
	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];
		StringInfoData state;

		if (key->outcome != KO_SYNCED || key->assoc_to == NULL)
			continue;
		initStringInfo(&state);
		for (int a = 0; a < m->nassoc; a++)
		{
			/* as_property links too: their target's new id resends them */
			if (key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
				continue;
			appendStringInfo(&state, "%s%s=%s", state.len ? ";" : "",
							 m->assoc[a].column, key->assoc_to[a]);
		}
		key->new_assoc = state.data;
	}
}

static int
prop_index(Batch *b, const char *name)
{
	for (int p = 0; p < b->nviewprops; p++)
		if (strcmp(b->prop_names[p], name) == 0)
			return p;
	return -1;
}

/*
 * Rows whose hubspot_owner_id is empty take the owner of the object an
 * inherit_owner association points to, read from HubSpot in one batch/read.
 */
static void
inherit_owners(Batch *b)
{
	MappingDef *m = b->mapping;
	int			owner = prop_index(b, "hubspot_owner_id");

	if (owner < 0)
		return;
	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		BatchKey  **keys = palloc(sizeof(BatchKey *) * b->nkeys);
		int			n = 0;
		HsJsonBody *body;
		HsResponse	resp;
		char	   *path;
		int			nres;
		char	  **ids;
		char	  **owners;
		const char *prop = "hubspot_owner_id";

		if (!def->inherit_owner)
			continue;
		body = hs_body_new();
		for (int i = 0; i < b->nkeys; i++)
		{
			BatchKey   *key = &b->keys[i];

			if (key->outcome != KO_NONE || !key->in_view ||
				key->values[owner][0] != '\0' ||
				key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
				continue;
			keys[n++] = key;
			hs_body_add_read(body, key->assoc_to[a]);
		}
		if (n == 0)
			continue;
		hs_body_set_properties(body, 1, &prop);
		path = psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, def->target_type);
		call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
		if (resp.transport_error == 0 && (resp.status == 200 || resp.status == 207) &&
			hs_parse_property(resp.body, resp.body_len, prop, &nres, &ids, &owners))
		{
			for (int i = 0; i < n; i++)
				for (int r = 0; r < nres; r++)
					if (strcmp(ids[r], keys[i]->assoc_to[a]) == 0 && owners[r] != NULL)
						keys[i]->values[owner] = owners[r];
			continue;
		}
		if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
			resp.status = 502;	/* an answer that makes no sense: retry */
		whole_call_outcome(b, keys, n, &resp, path);
	}
}

/*
 * One search for these candidates' match values; the first record found
 * for a value is adopted.  An answer cut short (more records than one page
 * holds, or than HubSpot's 10,000-result cap) cannot prove that a value has
 * no record: the candidates are searched again in halves, down to one value
 * a search, whose first page is enough.  HubSpot limits searches to a few
 * per second, so they are spaced.
 */
static void
match_search(Batch *b, BatchKey **cand, int n, int mp)
{
	static TimestampTz last_search = 0;
	MappingDef *m = b->mapping;
	const char **values = palloc(sizeof(char *) * n);
	HsResponse	resp;
	char	   *path;
	int			nres;
	char	  **ids;
	char	  **found;
	long		wait;
	const char *fields[1] = {"total"};
	char	   *total[1] = {NULL};

	for (int i = 0; i < n; i++)
		values[i] = cand[i]->values[mp];
	wait = 250 - (long) ((GetCurrentTimestamp() - last_search) / 1000);
	if (wait > 0)
		erpcrm_worker_sleep(wait, PG_WAIT_EXTENSION);
	last_search = GetCurrentTimestamp();

	path = psprintf("%s/%s/search", HS_OBJECTS_PREFIX, m->object_type);
	call_hubspot(b, "POST", path,
				 hs_search_body(m->match_property, n, values, m->id_property, 100),
				 n, &resp);
	if (!(resp.transport_error == 0 && resp.status == 200 &&
		  hs_parse_property(resp.body, resp.body_len, m->match_property,
							&nres, &ids, &found)))
	{
		/* no answer: creating now could duplicate a record; retry later */
		if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
			resp.status = 502;
		whole_call_outcome(b, cand, n, &resp, path);
		return;
	}
	for (int r = 0; r < nres; r++)
	{
		if (found[r] == NULL)
			continue;
		for (int i = 0; i < n; i++)
			if (cand[i]->explicit_id == NULL &&
				pg_strcasecmp(cand[i]->values[mp], found[r]) == 0)
			{
				/* first record found wins; the others stay as they are */
				cand[i]->explicit_id = ids[r];
				break;
			}
	}
	if (n > 1 && hs_parse_fields(resp.body, resp.body_len, 1, fields, total) &&
		total[0] != NULL && atol(total[0]) > nres)
	{
		BatchKey  **rest = palloc(sizeof(BatchKey *) * n);
		int			nrest = 0;

		for (int i = 0; i < n; i++)
			if (cand[i]->explicit_id == NULL && cand[i]->outcome == KO_NONE)
				rest[nrest++] = cand[i];
		if (nrest == 0)
			return;
		if (nrest < n)
			match_search(b, rest, nrest, mp);
		else
		{
			match_search(b, rest, nrest / 2, mp);
			match_search(b, rest + nrest / 2, nrest - nrest / 2, mp);
		}
	}
}

/*
 * Before creating objects, adopt HubSpot records that carry the same value
 * of the mapping's match property and no ERP id yet (companies created by
 * hand before the ERP was connected): they are updated by their id, which
 * also sets their id property.  One search call per batch; HubSpot limits
 * searches to a few per second, so they are spaced.
 */
static void
match_existing(Batch *b, BatchKey **upserts, int *nup,
			   BatchKey **updates, int *nupd)
{
	MappingDef *m = b->mapping;
	int			mp;
	BatchKey  **cand;
	int			n = 0;
	int			kept = 0;

	if (m->match_property == NULL || *nup == 0)
		return;
	mp = prop_index(b, m->match_property);
	if (mp < 0)
		return;
	cand = palloc(sizeof(BatchKey *) * *nup);
	for (int i = 0; i < *nup; i++)
	{
		BatchKey   *key = upserts[i];

		if (key->known_hubspot_id != NULL || key->values[mp][0] == '\0')
			continue;
		cand[n++] = key;
	}
	if (n == 0)
		return;

	match_search(b, cand, n, mp);

	/*
	 * HubSpot's search finds a record only some seconds after it was
	 * written.  A key whose first search found nothing is searched once
	 * more after that delay before a new record is created, so that a
	 * record made by hand just before is adopted, not duplicated.
	 */
	if (b->links12)
		for (int i = 0; i < n; i++)
			if (cand[i]->outcome == KO_NONE && cand[i]->explicit_id == NULL &&
				!cand[i]->searched_once)
			{
				set_outcome(cand[i], KO_WAIT, 0, "WAITING_FOR_SEARCH",
							psprintf("no HubSpot record has %s \"%s\" yet; searching once more after HubSpot's indexing delay before creating one",
									 m->match_property, cand[i]->values[mp]),
							NULL);
				cand[i]->wait_ms = ERPCRM_SEARCH_SETTLE_MS;
			}

	/* adopted keys move to the updates, failed ones leave */
	for (int i = 0; i < *nup; i++)
	{
		BatchKey   *key = upserts[i];

		if (key->outcome != KO_NONE)
			continue;
		if (key->explicit_id != NULL)
			updates[(*nupd)++] = key;
		else
			upserts[kept++] = key;
	}
	*nup = kept;
}

/* ----------------------------------------------------------------
 * 3. Record
 * ----------------------------------------------------------------
 */
static Datum
text_array(List *strings)
{
	int			n = list_length(strings);
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i = 0;
	ListCell   *lc;

	foreach(lc, strings)
	{
		char	   *s = lfirst(lc);

		nulls[i] = (s == NULL);
		d[i] = s ? CStringGetTextDatum(s) : (Datum) 0;
		i++;
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

static void
record_done(MappingDef *m, List *ids, List *hs_ids, bool archived, bool in_erp)
{
	Oid			types[5] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID, BOOLOID, BOOLOID};
	Datum		args[5];

	if (ids == NIL)
		return;
	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(ids);
	args[2] = text_array(hs_ids);
	args[3] = BoolGetDatum(archived);
	args[4] = BoolGetDatum(in_erp);
	if (SPI_execute_with_args("SELECT erpcrm._done($1, $2, $3, $4, $5)",
							  5, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._done failed");
}

static void
record_error(MappingDef *m, BatchKey *key, List *ids)
{
	Oid			types[8] = {INT4OID, TEXTARRAYOID, INT4OID, TEXTOID, TEXTOID,
	TEXTOID, INTERVALOID, INTERVALOID};
	Datum		args[8];
	char		nulls[8] = "        ";
	Interval   *base = NULL;
	Interval   *max = NULL;

	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(ids);
	args[2] = Int32GetDatum(key->http_status);
	nulls[2] = key->http_status == 0 ? 'n' : ' ';
	args[3] = key->category ? CStringGetTextDatum(key->category) : (Datum) 0;
	nulls[3] = key->category ? ' ' : 'n';
	args[4] = key->message ? CStringGetTextDatum(key->message) : (Datum) 0;
	nulls[4] = key->message ? ' ' : 'n';
	args[5] = key->correlation_id ? CStringGetTextDatum(key->correlation_id) : (Datum) 0;
	nulls[5] = key->correlation_id ? ' ' : 'n';

	switch (key->outcome)
	{
		case KO_FAILED:
			nulls[6] = nulls[7] = 'n';
			break;
		case KO_WAIT:
			base = palloc0(sizeof(Interval));
			base->time = (int64) Max(key->wait_ms, 10) * 1000;
			nulls[7] = 'n';
			break;
		default:
			base = palloc0(sizeof(Interval));
			base->time = (int64) erpcrm_retry_base_ms * 1000;
			max = palloc0(sizeof(Interval));
			max->time = (int64) erpcrm_retry_max_ms * 1000;
			break;
	}
	args[6] = PointerGetDatum(base);
	args[7] = PointerGetDatum(max);
	if (SPI_execute_with_args("SELECT erpcrm._error($1, $2, $3, $4, $5, $6, $7, $8)",
							  8, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._error failed");
}

/*
 * Keys sent alone that got a 5xx: those HubSpot had already failed on alone
 * (their last error says so) still fail alone; their retry is bounded.
 */
static void
find_failing_inputs(Batch *b)
{
	List	   *ids = NIL;
	Oid			types[3] = {INT4OID, TEXTARRAYOID, TEXTOID};
	Datum		args[3];

	if (!b->mapping->v12)
		return;
	for (int i = 0; i < b->nkeys; i++)
		if (b->keys[i].alone_5xx && b->keys[i].outcome == KO_RETRY)
			ids = lappend(ids, b->keys[i].erp_id);
	if (ids == NIL)
		return;
	args[0] = Int32GetDatum(b->mapping->id);
	args[1] = text_array(ids);
	args[2] = CStringGetTextDatum(INPUT_FAILING);
	if (SPI_execute_with_args("SELECT erp_id FROM erpcrm._failing_alone($1, $2, $3)",
							  3, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._failing_alone failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		for (int i = 0; i < b->nkeys; i++)
			if (b->keys[i].alone_5xx && strcmp(b->keys[i].erp_id, id) == 0)
			{
				MemoryContext old = MemoryContextSwitchTo(b->cxt);

				mark_input_failing(&b->keys[i]);
				MemoryContextSwitchTo(old);
			}
	}

	/*
	 * Such an input is no reason for the worker to back off as a whole:
	 * only other keys that wait for HubSpot are.
	 */
	if (SPI_processed > 0 && b->outcome->transient)
	{
		bool		others = false;

		for (int i = 0; i < b->nkeys; i++)
			if (b->keys[i].outcome == KO_RETRY && !b->keys[i].bounded)
				others = true;
		b->outcome->transient = others;
	}
}

/*
 * Keys whose retry only they need (a row the view cannot read, an input or
 * association HubSpot keeps refusing) are parked as failed once they used
 * up erpcrm.max_attempts.
 */
static void
record_give_up(MappingDef *m, List *ids)
{
	Oid			types[3] = {INT4OID, TEXTARRAYOID, INT4OID};
	Datum		args[3];

	if (!m->v12)
		return;
	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(ids);
	args[2] = Int32GetDatum(erpcrm_max_attempts);
	if (SPI_execute_with_args("SELECT erpcrm._give_up($1, $2, $3)",
							  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._give_up failed");
}

/*
 * 1.2: the links each synced key was sent without (its target is not a live
 * HubSpot object), the keys whose objects are archived now, and through
 * them the dependents to send again.
 */
static void
record_links(Batch *b)
{
	MappingDef *m = b->mapping;
	List	   *synced = NIL,
			   *unlinked = NIL,
			   *archived = NIL;
	Oid			types[4] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[4];

	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];

		if (key->outcome == KO_SYNCED)
		{
			StringInfoData j;
			int			n = 0;

			initStringInfo(&j);
			appendStringInfoChar(&j, '{');
			for (int a = 0; a < m->nassoc && key->assoc_key != NULL; a++)
			{
				if (key->assoc_key[a] == NULL || key->assoc_key[a][0] == '\0' ||
					key->assoc_to[a] == NULL || key->assoc_to[a][0] != '\0')
					continue;
				if (n++ > 0)
					appendStringInfoChar(&j, ',');
				escape_json(&j, m->assoc[a].column);
				appendStringInfoChar(&j, ':');
				escape_json(&j, key->assoc_key[a]);
			}
			appendStringInfoChar(&j, '}');
			synced = lappend(synced, key->erp_id);
			unlinked = lappend(unlinked, n > 0 ? j.data : NULL);
		}
		else if (key->outcome == KO_ARCHIVED && key->known_hubspot_id != NULL)
			archived = lappend(archived, key->erp_id);
	}
	if (synced == NIL && archived == NIL)
		return;
	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(synced);
	args[2] = text_array(unlinked);
	args[3] = text_array(archived);
	if (SPI_execute_with_args("SELECT erpcrm._links_done($1, $2, $3, $4)",
							  4, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._links_done failed");
}

static bool
same_error(BatchKey *a, BatchKey *b)
{
#define SAME(x, y) (((x) == NULL && (y) == NULL) || ((x) && (y) && strcmp((x), (y)) == 0))
	return a->outcome == b->outcome && a->http_status == b->http_status &&
		a->wait_ms == b->wait_ms && a->bounded == b->bounded &&
		SAME(a->category, b->category) && SAME(a->message, b->message) &&
		SAME(a->correlation_id, b->correlation_id);
#undef SAME
}

/* Every call of the batch into erpcrm.api_log (mapping id 0: none). */
static void
record_calls(Batch *b)
{
	MappingDef *m = b->mapping;
	ListCell   *lc;
	Oid			log_types[10] = {TEXTOID, TEXTOID, INT4OID, FLOAT8OID, INT4OID,
	TEXTOID, TEXTOID, INT4OID, INTERVALOID, TIMESTAMPTZOID};
	Interval   *retention = palloc0(sizeof(Interval));

	retention->time = (int64) erpcrm_api_log_retention_min * 60 * USECS_PER_SEC;
	foreach(lc, b->calls)
	{
		CallLog    *c = lfirst(lc);
		Datum		args[10];
		char		nulls[10] = "          ";

		args[0] = CStringGetTextDatum(c->method);
		args[1] = CStringGetTextDatum(c->path);
		args[2] = Int32GetDatum((int32) c->status);
		nulls[2] = c->status == 0 ? 'n' : ' ';
		args[3] = Float8GetDatum(c->latency_ms);
		args[4] = Int32GetDatum(c->inputs);
		args[5] = c->category ? CStringGetTextDatum(c->category) : (Datum) 0;
		nulls[5] = c->category ? ' ' : 'n';
		args[6] = c->correlation_id ? CStringGetTextDatum(c->correlation_id) : (Datum) 0;
		nulls[6] = c->correlation_id ? ' ' : 'n';
		args[7] = Int32GetDatum(m->id);
		nulls[7] = m->id == 0 ? 'n' : ' ';
		args[8] = PointerGetDatum(retention);
		args[9] = TimestampTzGetDatum(c->called_at);
		if (SPI_execute_with_args(m->v11 ?
								  "SELECT erpcrm._log_call($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)" :
								  "SELECT erpcrm._log_call($1, $2, $3, $4, $5, $6, $7, $8, $9)",
								  m->v11 ? 10 : 9, log_types, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._log_call failed");
	}
}

static void
record(Batch *b)
{
	MappingDef *m = b->mapping;
	List	   *synced = NIL,
			   *synced_hs = NIL,
			   *archived = NIL,
			   *kept = NIL,
			   *kept_hs = NIL;
	bool	   *done = palloc0(sizeof(bool) * b->nkeys);
	MemoryContext batch_cxt;

	batch_cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "erpcrm: recording results");
	erpcrm_worker_step("recording the results");

	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];

		switch (key->outcome)
		{
			case KO_SYNCED:
				synced = lappend(synced, key->erp_id);
				synced_hs = lappend(synced_hs, key->hubspot_id);
				b->outcome->synced++;
				done[i] = true;
				break;
			case KO_ARCHIVED:
				archived = lappend(archived, key->erp_id);
				done[i] = true;
				break;
			case KO_GONE_KEPT:
				kept = lappend(kept, key->erp_id);
				kept_hs = lappend(kept_hs, NULL);	/* HubSpot ids stay */
				done[i] = true;
				break;
			case KO_NONE:
				set_outcome(key, KO_RETRY, 0, "INTERNAL", "the key was not sent", NULL);
				break;
			default:
				break;
		}
	}
	record_done(m, synced, synced_hs, false, true);
	if (m->v11 && m->nassoc > 0)
	{
		List	   *ids = NIL;
		List	   *states = NIL;

		for (int i = 0; i < b->nkeys; i++)
			if (b->keys[i].outcome == KO_SYNCED && b->keys[i].new_assoc != NULL)
			{
				ids = lappend(ids, b->keys[i].erp_id);
				states = lappend(states, b->keys[i].new_assoc);
			}
		if (ids != NIL)
		{
			Oid			types[3] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID};
			Datum		args[3];

			args[0] = Int32GetDatum(m->id);
			args[1] = text_array(ids);
			args[2] = text_array(states);
			if (SPI_execute_with_args("SELECT erpcrm._set_assoc_state($1, $2, $3)",
									  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._set_assoc_state failed");
		}
	}
	record_done(m, archived, archived, true, false);
	record_done(m, kept, kept_hs, false, false);
	if (b->links12)
		record_links(b);

	find_failing_inputs(b);

	/* errors, grouped by identical outcome */
	for (int i = 0; i < b->nkeys; i++)
	{
		List	   *ids = NIL;

		if (done[i])
			continue;
		for (int j = i; j < b->nkeys; j++)
			if (!done[j] && same_error(&b->keys[i], &b->keys[j]))
			{
				ids = lappend(ids, b->keys[j].erp_id);
				done[j] = true;
			}
		record_error(m, &b->keys[i], ids);
		if (b->keys[i].outcome == KO_RETRY && b->keys[i].bounded)
			record_give_up(m, ids);
	}

	if (b->owner_misses > 0 && m->v12)
	{
		Oid			types[2] = {INT4OID, INT8OID};
		Datum		args[2];

		args[0] = Int32GetDatum(m->id);
		args[1] = Int64GetDatum((int64) b->owner_misses);
		if (SPI_execute_with_args("SELECT erpcrm._owner_misses($1, $2)",
								  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._owner_misses failed");
	}
	record_calls(b);

	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(batch_cxt);
}

/*
 * Sort the keys read into upserts, updates (rows with a hubspot_id) and
 * archives (keys that left the view); keys that wait for an associated
 * object, or cannot be sent, get their outcome here.
 */
static void
classify_keys(Batch *b, BatchKey **upserts, int *nup, BatchKey **updates,
			  int *nupd, BatchKey **archives, int *narch)
{
	MappingDef *m = b->mapping;

	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];
		bool		waiting = false;

		if (key->outcome != KO_NONE)
			continue;
		if (!key->in_view)
		{
			if (!m->archive)
				set_outcome(key, KO_GONE_KEPT, 0, NULL, NULL, NULL);
			else if (key->known_hubspot_id == NULL || key->already_archived)
				set_outcome(key, KO_ARCHIVED, 0, NULL, NULL, NULL);	/* no call */
			else
				archives[(*narch)++] = key;
			continue;
		}
		/* an associated object not in HubSpot yet: wait for it */
		for (int a = 0; a < m->nassoc; a++)
		{
			if (key->assoc_key[a] != NULL && key->assoc_to[a] == NULL)
			{
				set_outcome(key, KO_WAIT, 0, "WAITING_FOR_DEPENDENCY",
							psprintf("waiting for %s \"%s\" to reach HubSpot",
									 m->assoc[a].target_name, key->assoc_key[a]),
							NULL);
				key->wait_ms = Max(erpcrm_retry_base_ms, 1000);
				waiting = true;
				break;
			}
		}
		if (waiting)
			continue;
		if (key->id_value == NULL || key->id_value[0] == '\0')
		{
			set_outcome(key, KO_FAILED, 0, "ERP_EMPTY_ID",
						psprintf("the id property \"%s\" of this row is empty", m->id_property),
						NULL);
			continue;
		}
		if (key->explicit_id != NULL)
			updates[(*nupd)++] = key;
		else
			upserts[(*nup)++] = key;
	}

}

/* ----------------------------------------------------------------
 * The batch
 * ----------------------------------------------------------------
 */
void
erpcrm_deliver_batch(MappingDef *m, DeliveryOutcome *outcome)
{
	static MemoryContext batch_cxt = NULL;
	MemoryContext old;
	Batch		b;
	BatchKey  **upserts;
	BatchKey  **updates;
	BatchKey  **archives;
	int			nup = 0,
				nupd = 0,
				narch = 0;
	int			limit = m->batch_size > 0 ? Min(m->batch_size, erpcrm_batch_size) : erpcrm_batch_size;

	memset(outcome, 0, sizeof(*outcome));
	/* one context for every batch, emptied before and after each */
	if (batch_cxt == NULL)
		batch_cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm batch",
										  ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(batch_cxt);
	old = MemoryContextSwitchTo(batch_cxt);

	memset(&b, 0, sizeof(b));
	b.mapping = m;
	b.outcome = outcome;
	b.cxt = batch_cxt;

	if (!claim_and_read(&b, Min(limit, HS_MAX_BATCH)))
	{
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);
		return;
	}
	outcome->claimed = b.nkeys;

	upserts = palloc(sizeof(BatchKey *) * b.nkeys);
	updates = palloc(sizeof(BatchKey *) * b.nkeys);
	archives = palloc(sizeof(BatchKey *) * b.nkeys);
	classify_keys(&b, upserts, &nup, updates, &nupd, archives, &narch);

	inherit_owners(&b);
	if (!outcome->auth_failed && outcome->blocked_until == 0)
		match_existing(&b, upserts, &nup, updates, &nupd);
	/* keys that inherit_owners or match_existing gave an outcome stay out */
	{
		int			k = 0;

		for (int i = 0; i < nup; i++)
			if (upserts[i]->outcome == KO_NONE)
				upserts[k++] = upserts[i];
		nup = k;
		k = 0;
		for (int i = 0; i < nupd; i++)
			if (updates[i]->outcome == KO_NONE)
				updates[k++] = updates[i];
		nupd = k;
	}
	if (!outcome->auth_failed && outcome->blocked_until == 0)
		send_objects(&b, upserts, nup, false);
	if (!outcome->auth_failed && outcome->blocked_until == 0)
		send_objects(&b, updates, nupd, true);
	if (!outcome->auth_failed && outcome->blocked_until == 0)
		send_archives(&b, archives, narch);
	if (!outcome->auth_failed && outcome->blocked_until == 0)
		send_associations(&b);

	/* keys not sent because HubSpot stopped us wait for it */
	for (int i = 0; i < b.nkeys; i++)
		if (b.keys[i].outcome == KO_NONE && (outcome->auth_failed || outcome->blocked_until != 0))
		{
			set_outcome(&b.keys[i], KO_WAIT, 0, outcome->auth_failed ? "AUTH" : "RATE_LIMIT",
						outcome->auth_failed ? outcome->auth_message : "waiting for HubSpot's rate limit",
						NULL);
			b.keys[i].wait_ms = outcome->auth_failed ? 1000 :
				Max(1000, (outcome->blocked_until - GetCurrentTimestamp()) / 1000);
		}

	record(&b);

	MemoryContextSwitchTo(old);
	MemoryContextReset(batch_cxt);
}

/* ----------------------------------------------------------------
 * erpcrm.preview(): the requests one key would cause, without sending
 * ----------------------------------------------------------------
 */
static void
preview_step(List **steps, const char *method, char *path, char *body,
			 char *note)
{
	PreviewStep *step = palloc0(sizeof(PreviewStep));

	step->method = method;
	step->path = path;
	step->body = body;
	step->note = note;
	*steps = lappend(*steps, step);
}

/*
 * The requests the worker would send for this key now, built by the code
 * that builds them for a batch: the view is read as in a batch (as the
 * mapping's owner, in a security-restricted operation), the key is sorted
 * as in a batch, and the bodies come from the same functions.  Nothing is
 * sent, nothing is recorded.  SPI is connected and a snapshot is active.
 * A key whose row cannot be sent raises an ERROR saying why.
 */
List *
erpcrm_preview_key(MappingDef *m, const char *erp_id, const char *known_hubspot_id)
{
	Batch		b;
	DeliveryOutcome outcome;
	BatchKey   *key;
	BatchKey   *upserts[1];
	BatchKey   *updates[1];
	BatchKey   *archives[1];
	int			nup = 0,
				nupd = 0,
				narch = 0;
	List	   *steps = NIL;
	int			owner;
	char	   *path;
	char	   *json;
	bool		by_explicit;

	memset(&b, 0, sizeof(b));
	memset(&outcome, 0, sizeof(outcome));
	b.mapping = m;
	b.outcome = &outcome;
	b.cxt = CurrentMemoryContext;
	b.nkeys = 1;
	b.keys = palloc0(sizeof(BatchKey));
	key = &b.keys[0];
	key->erp_id = pstrdup(erp_id);
	key->known_hubspot_id = known_hubspot_id ? pstrdup(known_hubspot_id) : NULL;

	read_rows(&b);
	if (key->outcome == KO_NONE && !key->in_view)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("key \"%s\" is not in the view %s of mapping \"%s\"",
						erp_id, m->source, m->name),
				 key->known_hubspot_id == NULL ? 0 :
				 errdetail(m->archive ?
						   "The worker would archive HubSpot object %s." :
						   "The worker would keep HubSpot object %s as it is.",
						   key->known_hubspot_id)));
	classify_keys(&b, upserts, &nup, updates, &nupd, archives, &narch);

	switch (key->outcome)
	{
		case KO_NONE:
			break;
		case KO_WAIT:
			preview_step(&steps, NULL, NULL, NULL, key->message);
			return steps;
		case KO_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("the row of key \"%s\" of mapping \"%s\" cannot be sent to HubSpot",
							erp_id, m->name),
					 errdetail("%s: %s", key->category ? key->category : "ERROR",
							   key->message ? key->message : "no reason given"),
					 errhint("The worker would park this key as failed (see erpcrm.failures); correct the row or the view.")));
			break;
		default:
			/* the view cannot be read at all (a privilege, a function) */
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the view %s of mapping \"%s\" cannot be read as its owner",
							m->source, m->name),
					 errdetail("%s: %s", key->category ? key->category : "ERROR",
							   key->message ? key->message : "no reason given"),
					 errhint("The worker would retry the key with backoff, and park it as failed after erpcrm.max_attempts attempts.")));
	}

	/* an empty owner is taken from the associated object, read first */
	owner = prop_index(&b, "hubspot_owner_id");
	for (int a = 0; a < m->nassoc && owner >= 0; a++)
	{
		AssocDef   *def = &m->assoc[a];
		const char *prop = "hubspot_owner_id";
		HsJsonBody *body;

		if (!def->inherit_owner || key->values[owner][0] != '\0' ||
			key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
			continue;
		body = hs_body_new();
		hs_body_add_read(body, key->assoc_to[a]);
		hs_body_set_properties(body, 1, &prop);
		preview_step(&steps, "POST",
					 psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, def->target_type),
					 hs_body_finish(body),
					 psprintf("hubspot_owner_id is empty: the owner of %s \"%s\" is read, and sent with the object",
							  def->target_name, key->assoc_key[a]));
		break;
	}

	/* a new key may adopt a record made by hand */
	if (nup == 1 && m->match_property != NULL && key->known_hubspot_id == NULL)
	{
		int			mp = prop_index(&b, m->match_property);

		if (mp >= 0 && key->values[mp][0] != '\0')
		{
			const char *values[1] = {key->values[mp]};

			preview_step(&steps, "POST",
						 psprintf("%s/%s/search", HS_OBJECTS_PREFIX, m->object_type),
						 hs_search_body(m->match_property, 1, values, m->id_property, 100),
						 psprintf("a record with %s \"%s\" and no %s is adopted: it is updated by its id instead of the upsert below",
								  m->match_property, key->values[mp], m->id_property));
		}
	}

	by_explicit = (nupd == 1);
	json = objects_request(&b, by_explicit ? updates : upserts, 1, by_explicit, &path);
	preview_step(&steps, "POST", path, json,
				 by_explicit ? psprintf("update of HubSpot object %s (the view's hubspot_id)",
										key->explicit_id) :
				 key->known_hubspot_id ?
				 psprintf("upsert by %s; HubSpot object %s", m->id_property,
						  key->known_hubspot_id) :
				 psprintf("upsert by %s; creates the object", m->id_property));

	/* associations, from the object written */
	key->is_new = (key->explicit_id == NULL && key->known_hubspot_id == NULL);
	key->hubspot_id = key->explicit_id ? key->explicit_id :
		key->is_new ? "(new)" : key->known_hubspot_id;
	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		const char *to;
		char	   *old;

		if (def->as_property != NULL)
			continue;
		association_change(key, def, a, &to, &old);
		if (old != NULL && (to == NULL || strcmp(old, to) != 0))
		{
			HsJsonBody *body = hs_body_new();

			hs_body_add_association_archive(body, key->hubspot_id, old);
			preview_step(&steps, "POST",
						 psprintf("%s/%s/%s/batch/archive", HS_ASSOCIATIONS_PREFIX,
								  m->object_type, def->target_type),
						 hs_body_finish(body),
						 psprintf("removes the association (%s) to %s %s made before",
								  def->column, def->target_name, old));
		}
		if (to != NULL && (old == NULL || strcmp(old, to) != 0))
		{
			json = association_request(&b, def, a, &key, 1, &path);
			preview_step(&steps, "POST", path, json,
						 psprintf("associates it (%s) to %s \"%s\"%s",
								  def->column, def->target_name, key->assoc_key[a],
								  key->is_new ? "; \"(new)\" is the id HubSpot gives the new object" : ""));
		}
	}
	return steps;
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

	memset(&b, 0, sizeof(b));
	memset(&outcome, 0, sizeof(outcome));
	memset(&none, 0, sizeof(none));
	none.name = "owners";
	none.v11 = none.v12 = true;
	b.mapping = &none;
	b.outcome = &outcome;
	b.cxt = cxt;

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

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "erpcrm: recording HubSpot's owners");
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
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return ok;
}

/*-------------------------------------------------------------------------
 *
 * record.c
 *	  Step 3 of a delivery batch: record, in a new transaction, every key's
 *	  outcome (erpcrm._done, erpcrm._error, erpcrm._links_done, ...) and
 *	  every call made (erpcrm._log_call).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "activity.h"
#include "kept.h"
#include "client.h"
#include "delivery_int.h"
#include "erpcrm.h"

Datum
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

/*
 * Keys done: written (or archived, or left alone) in HubSpot.  As of 1.3,
 * fingerprints (of the rows sent, NULL where unknown) are recorded in the
 * same UPDATE.
 */
static void
record_done(Batch *b, List *ids, List *hs_ids, List *fingerprints,
			bool archived, bool in_erp)
{
	MappingDef *m = b->mapping;
	Oid			types[6] = {INT4OID, TEXTARRAYOID, TEXTARRAYOID, BOOLOID, BOOLOID, INT8ARRAYOID};
	Datum		args[6];

	if (ids == NIL)
		return;
	args[0] = Int32GetDatum(m->id);
	args[1] = text_array(ids);
	args[2] = text_array(hs_ids);
	args[3] = BoolGetDatum(archived);
	args[4] = BoolGetDatum(in_erp);
	if (b->fingerprints13)
	{
		int			n = list_length(ids);
		Datum	   *d = palloc(sizeof(Datum) * n);
		bool	   *nulls = palloc(sizeof(bool) * n);
		int			dims[1] = {n};
		int			lbs[1] = {1};
		int			i = 0;
		ListCell   *lc;

		for (i = 0; i < n; i++)
		{
			nulls[i] = true;
			d[i] = (Datum) 0;
		}
		i = 0;
		foreach(lc, fingerprints)
		{
			BatchKey   *key = lfirst(lc);

			if (key != NULL && key->has_fingerprint)
			{
				nulls[i] = false;
				d[i] = Int64GetDatum(key->fingerprint);
			}
			i++;
		}
		args[5] = PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, INT8OID,
													 sizeof(int64), FLOAT8PASSBYVAL,
													 TYPALIGN_DOUBLE));
		if (erpcrm_execute_kept("SELECT erpcrm._done($1, $2, $3, $4, $5, $6)",
								  6, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._done failed");
		return;
	}
	if (erpcrm_execute_kept("SELECT erpcrm._done($1, $2, $3, $4, $5)",
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
	if (erpcrm_execute_kept("SELECT erpcrm._error($1, $2, $3, $4, $5, $6, $7, $8)",
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
	if (erpcrm_execute_kept("SELECT erp_id FROM erpcrm._failing_alone($1, $2, $3)",
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
	if (erpcrm_execute_kept("SELECT erpcrm._give_up($1, $2, $3)",
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
	if (erpcrm_execute_kept("SELECT erpcrm._links_done($1, $2, $3, $4)",
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
void
record_calls(Batch *b)
{
	ListCell   *lc;

	foreach(lc, b->calls)
		erpcrm_log_call(lfirst(lc), b->mapping->id, b->mapping->v11, 0);
}

void
record_batch(Batch *b)
{
	MappingDef *m = b->mapping;
	List	   *synced = NIL,
			   *synced_hs = NIL,
			   *synced_fp = NIL,
			   *archived = NIL,
			   *kept = NIL,
			   *kept_hs = NIL;
	bool	   *done = palloc0(sizeof(bool) * b->nkeys);

	erpcrm_begin_step("erpcrm: recording results");
	erpcrm_worker_step("recording the results");

	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];

		switch (key->outcome)
		{
			case KO_SYNCED:
				synced = lappend(synced, key->erp_id);
				synced_hs = lappend(synced_hs, key->hubspot_id);
				synced_fp = lappend(synced_fp, key);
				b->outcome->synced++;
				done[i] = true;
				break;
			case KO_FORGOTTEN:
				done[i] = true; /* its sync state is gone already */
				break;
			case KO_UNCHANGED:
				synced = lappend(synced, key->erp_id);
				synced_hs = lappend(synced_hs, key->hubspot_id);
				synced_fp = lappend(synced_fp, key);
				b->unchanged++;
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
	record_done(b, synced, synced_hs, synced_fp, false, true);
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
			if (erpcrm_execute_kept("SELECT erpcrm._set_assoc_state($1, $2, $3)",
									  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._set_assoc_state failed");
		}
	}
	record_done(b, archived, archived, NIL, true, false);
	record_done(b, kept, kept_hs, NIL, false, false);
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
		if (erpcrm_execute_kept("SELECT erpcrm._owner_misses($1, $2)",
								  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._owner_misses failed");
	}
	if (b->unchanged > 0)
	{
		Oid			types[2] = {INT4OID, INT8OID};
		Datum		args[2];

		args[0] = Int32GetDatum(m->id);
		args[1] = Int64GetDatum((int64) b->unchanged);
		if (erpcrm_execute_kept("SELECT erpcrm._unchanged($1, $2)",
								  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._unchanged failed");
	}
	record_calls(b);

	erpcrm_end_step();
}

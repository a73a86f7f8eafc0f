/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The capture trigger: the only erpcrm code on the ERP's write path.
 *
 * AFTER ROW INSERT/UPDATE/DELETE: compute the mapping key of the changed
 * row (old and new for an UPDATE that moves the key) and append it to
 * erpcrm.outbox (buffered by outbox.c and written with heap_multi_insert
 * before the ERP's transaction commits).
 * AFTER TRUNCATE: append one "every key of the mapping" row.  An UPDATE
 * that leaves the row byte-for-byte the same records nothing.  A run of rows
 * with the same key in one (sub)transaction, such as the lines of one invoice
 * in a COPY, records the key once.
 *
 * No network, no SPI, no locks beyond the outbox's RowExclusiveLock; the
 * worker is woken when the transaction commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#include "utils/rel.h"

#include "capture.h"
#include "erpcrm.h"

/*
 * Is this key the one this watch appended last, in this very subtransaction?
 * Then the outbox already holds it (a subtransaction cannot have been rolled
 * back while it is still the current one).
 */
static bool
is_repeat(WatchEntry *entry, text *key)
{
	Size		len = VARSIZE_ANY_EXHDR(key);

	return entry->last_lxid == MyProc->lxid &&
		entry->last_subxid == GetCurrentSubTransactionId() &&
		entry->last_key != NULL &&
		entry->last_key_len == len &&
		memcmp(entry->last_key, VARDATA_ANY(key), len) == 0;
}

static void
remember(WatchEntry *entry, text *key)
{
	Size		len = VARSIZE_ANY_EXHDR(key);

	if (entry->last_key_cap < len + 1)
	{
		Size		cap = Max(len + 1, 64);

		if (entry->last_key != NULL)
			pfree(entry->last_key);
		entry->last_key = MemoryContextAlloc(TopMemoryContext, cap);
		entry->last_key_cap = cap;
	}
	memcpy(entry->last_key, VARDATA_ANY(key), len);
	entry->last_key_len = len;
	entry->last_lxid = MyProc->lxid;
	entry->last_subxid = GetCurrentSubTransactionId();
}

/* Append (mapping_id, key) to erpcrm.outbox; key NULL = every key. */
static void
append_outbox(WatchEntry *entry, text *key)
{
	if (key != NULL && is_repeat(entry, key))
		return;

	erpcrm_outbox_add(entry->outbox_relid, entry->mapping_id, key);

	if (key != NULL)
		remember(entry, key);
	else
		entry->last_lxid = InvalidLocalTransactionId;

	erpcrm_wake_at_commit();
}

/* Compute the key of a row and append it; returns the key (or NULL). */
static text *
capture_row(WatchEntry *entry, TupleTableSlot *slot)
{
	bool		isnull;
	Datum		key;

	key = erpcrm_eval_key(entry, slot, &isnull);
	if (isnull)
		return NULL;
	append_outbox(entry, DatumGetTextPP(key));
	return DatumGetTextPP(key);
}

/* Did an UPDATE change anything at all? */
static bool
tuples_identical(HeapTuple oldtup, HeapTuple newtup)
{
	HeapTupleHeader o = oldtup->t_data;
	HeapTupleHeader n = newtup->t_data;

	if (oldtup->t_len != newtup->t_len)
		return false;
	if (HeapTupleHeaderGetNatts(o) != HeapTupleHeaderGetNatts(n))
		return false;
	if ((o->t_infomask & ~HEAP_XACT_MASK) != (n->t_infomask & ~HEAP_XACT_MASK))
		return false;
	if (o->t_hoff != n->t_hoff)
		return false;
	/* null bitmap and data */
	return memcmp((char *) o + offsetof(HeapTupleHeaderData, t_bits),
				  (char *) n + offsetof(HeapTupleHeaderData, t_bits),
				  oldtup->t_len - offsetof(HeapTupleHeaderData, t_bits)) == 0;
}

static bool
keys_equal(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

PG_FUNCTION_INFO_V1(erpcrm_capture_v1);
Datum
erpcrm_capture_v1(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	WatchEntry *entry;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("erpcrm.capture() was not called by a trigger"),
				 errhint("erpcrm.watch() creates the triggers that call it.")));
	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("erpcrm.capture() must be fired AFTER the change")));

	entry = erpcrm_watch_entry(trigdata->tg_trigger, trigdata->tg_relation);

	if (TRIGGER_FIRED_BY_TRUNCATE(event))
	{
		append_outbox(entry, NULL);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("erpcrm.capture() must be fired for each row, or for TRUNCATE")));

	if (TRIGGER_FIRED_BY_INSERT(event))
		capture_row(entry, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_DELETE(event))
		capture_row(entry, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		text	   *newkey;
		bool		isnull;
		Datum		oldkey;

		if (trigdata->tg_trigtuple != NULL && trigdata->tg_newtuple != NULL &&
			tuples_identical(trigdata->tg_trigtuple, trigdata->tg_newtuple))
			return PointerGetDatum(NULL);

		newkey = capture_row(entry, trigdata->tg_newslot);
		oldkey = erpcrm_eval_key(entry, trigdata->tg_trigslot, &isnull);
		if (!isnull &&
			(newkey == NULL || !keys_equal(newkey, DatumGetTextPP(oldkey))))
			append_outbox(entry, DatumGetTextPP(oldkey));
	}

	ResetExprContext(entry->econtext);
	return PointerGetDatum(NULL);
}

/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The capture trigger: the only erpcrm code on the ERP's write path.
 *
 * Watches of plain and partitioned tables fire once per statement (AFTER
 * INSERT/UPDATE/DELETE ... FOR EACH STATEMENT) and read the statement's
 * rows from its transition tables; partitions and inheritance children,
 * which cannot have transition tables, and watches made by erpcrm 1.0 fire
 * once per row.  Either way: compute the mapping key of each changed row
 * (old and new for an UPDATE that moves the key) and hand it to the outbox
 * buffer (outbox.c), which writes it with heap_multi_insert before the ERP's
 * transaction commits.  AFTER TRUNCATE appends one "every key of the
 * mapping" row.  An UPDATE that leaves a row byte-for-byte the same records
 * nothing.  A run of rows with the same key in one (sub)transaction, such as
 * the lines of one invoice in a COPY, records the key once.
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
#include "utils/datum.h"
#include "utils/tuplestore.h"
#include "executor/executor.h"
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

/* The last "every key" appended, in this backend. */
static struct
{
	LocalTransactionId lxid;
	SubTransactionId subxid;
	Oid			outbox_relid;
	int32		outbox_id;
}			last_whole;

/* Append (mapping_id, key) to erpcrm.outbox; key NULL = every key. */
static void
append_outbox(WatchEntry *entry, text *key)
{
	if (key != NULL && is_repeat(entry, key))
		return;
	/*
	 * "every key" once per subtransaction is enough, also when a TRUNCATE of
	 * a partitioned table fires the trigger of each of its partitions
	 */
	if (key == NULL && last_whole.lxid == MyProc->lxid &&
		last_whole.subxid == GetCurrentSubTransactionId() &&
		last_whole.outbox_relid == entry->outbox_relid &&
		last_whole.outbox_id == entry->outbox_id)
		return;

	erpcrm_outbox_add(entry->outbox_relid, entry->outbox_id, key);

	if (key != NULL)
		remember(entry, key);
	else
	{
		entry->last_lxid = InvalidLocalTransactionId;
		last_whole.lxid = MyProc->lxid;
		last_whole.subxid = GetCurrentSubTransactionId();
		last_whole.outbox_relid = entry->outbox_relid;
		last_whole.outbox_id = entry->outbox_id;
	}

	erpcrm_at_commit(ERPCRM_AT_COMMIT_WAKE);
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

/* Is one column the same, byte for byte, in both rows? */
static bool
column_same(TupleTableSlot *a, TupleTableSlot *b, AttrNumber attno)
{
	Form_pg_attribute att = TupleDescAttr(a->tts_tupleDescriptor, attno - 1);
	bool		anull;
	bool		bnull;
	Datum		av = slot_getattr(a, attno, &anull);
	Datum		bv = slot_getattr(b, attno, &bnull);

	if (anull != bnull)
		return false;
	return anull || datumIsEqual(av, bv, att->attbyval, att->attlen);
}

/* Are the columns the key is computed from the same in both rows? */
static bool
key_columns_same(WatchEntry *entry, TupleTableSlot *a, TupleTableSlot *b)
{
	if (entry->nkey_cols < 0)
		return false;
	for (int i = 0; i < entry->nkey_cols; i++)
		if (!column_same(a, b, entry->key_cols[i]))
			return false;
	return true;
}

/*
 * An UPDATE of one row: the new key, and the old one if it moved.  When the
 * columns the key is computed from are unchanged, so is the key, and the old
 * one is not computed at all (the common UPDATE of an ERP row).
 */
static void
capture_update(WatchEntry *entry, TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	text	   *newkey;
	bool		isnull;
	Datum		oldkey;

	newkey = capture_row(entry, newslot);
	if (key_columns_same(entry, oldslot, newslot))
	{
		ResetExprContext(entry->econtext);
		return;
	}
	oldkey = erpcrm_eval_key(entry, oldslot, &isnull);
	if (!isnull &&
		(newkey == NULL || !keys_equal(newkey, DatumGetTextPP(oldkey))))
		append_outbox(entry, DatumGetTextPP(oldkey));
	ResetExprContext(entry->econtext);
}

/*
 * Same values, byte for byte, in every column?  The two rows of a
 * transition table are compared as they are stored, without taking them
 * apart into columns: a value stored another way (compressed in one row
 * only) counts as a change, which costs a key the worker finds unchanged.
 */
static bool
slots_identical(TupleTableSlot *a, TupleTableSlot *b)
{
	bool		free_a;
	bool		free_b;
	MinimalTuple ta = ExecFetchSlotMinimalTuple(a, &free_a);
	MinimalTuple tb = ExecFetchSlotMinimalTuple(b, &free_b);
	bool		same;

	Assert(!free_a && !free_b);
	same = ta->t_len == tb->t_len &&
		(ta->t_infomask2 & HEAP_NATTS_MASK) == (tb->t_infomask2 & HEAP_NATTS_MASK) &&
		(ta->t_infomask & ~HEAP_XACT_MASK) == (tb->t_infomask & ~HEAP_XACT_MASK) &&
		ta->t_hoff == tb->t_hoff &&
		memcmp((char *) ta + offsetof(MinimalTupleData, t_bits),
			   (char *) tb + offsetof(MinimalTupleData, t_bits),
			   ta->t_len - offsetof(MinimalTupleData, t_bits)) == 0;
	return same;
}

/* Start reading a transition table from its first row, on a pointer of ours. */
static void
rewind_table(Tuplestorestate *table)
{
	int			ptr = tuplestore_alloc_read_pointer(table, EXEC_FLAG_REWIND);

	tuplestore_select_read_pointer(table, ptr);
	tuplestore_rescan(table);
}

/*
 * A statement's rows, from its transition tables: one key per row (old and
 * new for an UPDATE, whose old and new rows come in the same order), no
 * per-row trigger call at all.
 */
static void
capture_statement(WatchEntry *entry, TriggerData *trigdata)
{
	TriggerEvent event = trigdata->tg_event;
	Tuplestorestate *oldtable = trigdata->tg_oldtable;
	Tuplestorestate *newtable = trigdata->tg_newtable;
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	TupleTableSlot *oldslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TupleTableSlot *newslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);

	if ((TRIGGER_FIRED_BY_INSERT(event) && newtable == NULL) ||
		(TRIGGER_FIRED_BY_DELETE(event) && oldtable == NULL) ||
		(TRIGGER_FIRED_BY_UPDATE(event) && (oldtable == NULL || newtable == NULL)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on %s has no transition tables",
						trigdata->tg_trigger->tgname,
						RelationGetRelationName(trigdata->tg_relation)),
				 errhint("Create capture triggers with erpcrm.watch().")));

	if (oldtable != NULL)
		rewind_table(oldtable);
	if (newtable != NULL)
		rewind_table(newtable);

	if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		for (;;)
		{
			bool		has_old = tuplestore_gettupleslot(oldtable, true, false, oldslot);
			bool		has_new = tuplestore_gettupleslot(newtable, true, false, newslot);

			if (has_old && has_new)
			{
				if (!slots_identical(oldslot, newslot))
					capture_update(entry, oldslot, newslot);
			}
			else if (has_old)
				capture_row(entry, oldslot);
			else if (has_new)
				capture_row(entry, newslot);
			else
				break;
			ResetExprContext(entry->econtext);
		}
	}
	else
	{
		Tuplestorestate *table = TRIGGER_FIRED_BY_INSERT(event) ? newtable : oldtable;

		while (tuplestore_gettupleslot(table, true, false, newslot))
		{
			capture_row(entry, newslot);
			ResetExprContext(entry->econtext);
		}
	}
	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
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

	/*
	 * A key that no longer fits the table (see keyexpr.c): the ERP's write
	 * goes through and every key of the mapping is marked for sending.
	 */
	if (TRIGGER_FIRED_BY_TRUNCATE(event) || entry->expr == NULL)
	{
		append_outbox(entry, NULL);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(event))
	{
		capture_statement(entry, trigdata);
		return PointerGetDatum(NULL);
	}

	if (TRIGGER_FIRED_BY_INSERT(event))
		capture_row(entry, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_DELETE(event))
		capture_row(entry, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		if (trigdata->tg_trigtuple != NULL && trigdata->tg_newtuple != NULL &&
			tuples_identical(trigdata->tg_trigtuple, trigdata->tg_newtuple))
			return PointerGetDatum(NULL);
		capture_update(entry, trigdata->tg_trigslot, trigdata->tg_newslot);
	}

	ResetExprContext(entry->econtext);
	return PointerGetDatum(NULL);
}

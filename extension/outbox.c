/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The capture trigger's buffer: keys captured in a transaction are kept
 *	  in memory and written to erpcrm.outbox with heap_multi_insert, a page
 *	  at a time, instead of one heap insert (and one WAL record) per row.
 *
 * Keys are written at the latest just before the transaction commits or
 * prepares (XACT_EVENT_PRE_COMMIT), so a committed transaction never lacks
 * its keys; a rolled-back one leaves no trace.  Subtransactions: every key
 * is tagged with the subtransaction that captured it.  A subtransaction that
 * commits hands its keys to its parent; one that aborts drops its keys.
 * When the buffer grows, only the current subtransaction's keys are written,
 * so that the rows carry the xid of the subtransaction that owns them and
 * vanish with it if it is rolled back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "capture.h"
#include "erpcrm.h"

/* keys buffered before the current subtransaction's are written */
#define OUTBOX_FLUSH_AT		4096
/* rows per heap_multi_insert call */
#define OUTBOX_MULTI_INSERT	1000
/* a mapping with at least this many keys in a flush gets packed rows */
#define OUTBOX_PACK_FROM	8
/* bytes of keys per packed row: inline, well inside a page */
#define OUTBOX_PACK_BYTES	6000

typedef struct BufferedKey
{
	Oid			outbox_relid;
	int32		mapping_id;
	SubTransactionId subxid;
	bool		written;
	text	   *key;			/* NULL: every key of the mapping */
} BufferedKey;

static MemoryContext buffer_cxt = NULL;	/* child of TopTransactionContext */
static BufferedKey *buffer = NULL;
static int	nbuffered = 0;
static int	capacity = 0;
static int	flush_at = OUTBOX_FLUSH_AT;
static bool callbacks_registered = false;

static void
forget_buffer(void)
{
	/* the memory goes with TopTransactionContext */
	buffer_cxt = NULL;
	buffer = NULL;
	nbuffered = 0;
	capacity = 0;
	flush_at = OUTBOX_FLUSH_AT;
}

/*
 * The outbox must be as erpcrm made it: (mapping_id, erp_id) in 1.0, plus
 * erp_ids text[] since 1.1, and no index.  Returns whether rows can be packed.
 */
static bool
check_outbox(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		packed = desc->natts == 3 &&
		TupleDescAttr(desc, 2)->atttypid == TEXTARRAYOID &&
		!TupleDescAttr(desc, 2)->attisdropped;

	if ((rel->rd_rel->relhasindex && RelationGetIndexList(rel) != NIL) ||
		(desc->natts != 2 && !packed))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("erpcrm.outbox has been altered"),
				 errdetail("The outbox must keep its two columns and no index."),
				 errhint("Drop the indexes or columns added to erpcrm.outbox.")));
	return packed;
}

typedef struct Pack
{
	int32		mapping_id;
	int			nkeys;			/* keys of this mapping in the flush */
	int			n;				/* keys in the row being packed */
	Size		bytes;
	Datum	   *keys;
} Pack;

typedef struct Writer
{
	Relation	rel;
	TupleTableSlot *slots[OUTBOX_MULTI_INSERT];
	int			nslots;
	int			made;
} Writer;

static TupleTableSlot *
next_slot(Writer *w)
{
	TupleTableSlot *slot;

	if (w->nslots == w->made)
		w->slots[w->made++] = MakeSingleTupleTableSlot(RelationGetDescr(w->rel),
													   &TTSOpsVirtual);
	slot = w->slots[w->nslots++];
	ExecClearTuple(slot);
	return slot;
}

static void
write_slots(Writer *w)
{
	if (w->nslots > 0)
		heap_multi_insert(w->rel, w->slots, w->nslots, GetCurrentCommandId(true), 0, NULL);
	w->nslots = 0;
}

static void
store_row(Writer *w, int32 mapping_id, Datum key, bool key_null,
		  Datum keys, bool keys_null)
{
	TupleTableSlot *slot = next_slot(w);
	int			natts = RelationGetDescr(w->rel)->natts;

	slot->tts_values[0] = Int32GetDatum(mapping_id);
	slot->tts_isnull[0] = false;
	slot->tts_values[1] = key;
	slot->tts_isnull[1] = key_null;
	if (natts == 3)
	{
		slot->tts_values[2] = keys;
		slot->tts_isnull[2] = keys_null;
	}
	ExecStoreVirtualTuple(slot);
	if (w->nslots == OUTBOX_MULTI_INSERT)
		write_slots(w);
}

static void
store_pack(Writer *w, Pack *p)
{
	if (p->n == 0)
		return;
	store_row(w, p->mapping_id, (Datum) 0, true,
			  PointerGetDatum(construct_array(p->keys, p->n, TEXTOID, -1, false,
											  TYPALIGN_INT)),
			  false);
	p->n = 0;
	p->bytes = 0;
}

/*
 * Write the buffered keys of one subtransaction (InvalidSubTransactionId:
 * all of them) and remove them from the buffer.
 */
static void
flush(SubTransactionId only)
{
	List	   *relids = NIL;
	ListCell   *lc;
	int			kept = 0;

	for (int i = 0; i < nbuffered; i++)
		if (only == InvalidSubTransactionId || buffer[i].subxid == only)
			relids = list_append_unique_oid(relids, buffer[i].outbox_relid);

	/* one relation, but for an extension reinstalled mid-transaction */
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
												  "erpcrm outbox flush",
												  ALLOCSET_DEFAULT_SIZES);
		MemoryContext old = MemoryContextSwitchTo(cxt);
		Writer		w;
		bool		packed;
		Pack	   *packs = NULL;
		int			npacks = 0;

		memset(&w, 0, sizeof(w));
		w.rel = table_open(relid, RowExclusiveLock);
		packed = check_outbox(w.rel);

		/* keys per mapping: many of one mapping are packed */
		if (packed)
		{
			packs = palloc0(sizeof(Pack) * 16);
			for (int i = 0; i < nbuffered; i++)
			{
				BufferedKey *b = &buffer[i];
				int			p;

				if ((only != InvalidSubTransactionId && b->subxid != only) ||
					b->outbox_relid != relid || b->key == NULL)
					continue;
				for (p = 0; p < npacks; p++)
					if (packs[p].mapping_id == b->mapping_id)
						break;
				if (p == npacks)
				{
					if (npacks % 16 == 0 && npacks > 0)
						packs = repalloc(packs, sizeof(Pack) * (npacks + 16));
					memset(&packs[p], 0, sizeof(Pack));
					packs[p].mapping_id = b->mapping_id;
					npacks++;
				}
				packs[p].nkeys++;
			}
			for (int p = 0; p < npacks; p++)
				if (packs[p].nkeys >= OUTBOX_PACK_FROM)
					packs[p].keys = palloc(sizeof(Datum) * Min(packs[p].nkeys, 1000));
		}

		for (int i = 0; i < nbuffered; i++)
		{
			BufferedKey *b = &buffer[i];
			Pack	   *pack = NULL;

			if ((only != InvalidSubTransactionId && b->subxid != only) ||
				b->outbox_relid != relid)
				continue;
			b->written = true;
			/*
			 * A key too long for a packed row (which is stored inline) gets a
			 * row of its own, where it can be TOASTed: the fold parks keys
			 * over erpcrm's limit, and the ERP's write must not fail for it.
			 */
			for (int p = 0; p < npacks && b->key != NULL &&
				 VARSIZE(b->key) <= OUTBOX_PACK_BYTES; p++)
				if (packs[p].mapping_id == b->mapping_id && packs[p].keys != NULL)
					pack = &packs[p];
			if (pack == NULL)
			{
				store_row(&w, b->mapping_id, PointerGetDatum(b->key), b->key == NULL,
						  (Datum) 0, true);
				continue;
			}
			if (pack->n == 1000 || pack->bytes + VARSIZE(b->key) > OUTBOX_PACK_BYTES)
				store_pack(&w, pack);
			pack->keys[pack->n++] = PointerGetDatum(b->key);
			pack->bytes += VARSIZE(b->key) + 4;
		}
		for (int p = 0; p < npacks; p++)
			if (packs[p].keys != NULL)
				store_pack(&w, &packs[p]);
		write_slots(&w);
		for (int s = 0; s < w.made; s++)
			ExecDropSingleTupleTableSlot(w.slots[s]);
		table_close(w.rel, NoLock);
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
	}
	list_free(relids);

	/* keep what was not written */
	for (int i = 0; i < nbuffered; i++)
		if (!buffer[i].written)
			buffer[kept++] = buffer[i];
	nbuffered = kept;
	flush_at = nbuffered + OUTBOX_FLUSH_AT;
}

static void
outbox_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* every key now belongs to the top transaction */
			if (nbuffered > 0)
				flush(InvalidSubTransactionId);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			forget_buffer();
			break;
		default:
			break;
	}
}

static void
outbox_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			for (int i = 0; i < nbuffered; i++)
				if (buffer[i].subxid == mySubid)
					buffer[i].subxid = parentSubid;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			for (int i = 0; i < nbuffered; i++)
				if (buffer[i].subxid != mySubid)
					buffer[kept++] = buffer[i];
			nbuffered = kept;
			break;
		default:
			break;
	}
}

/*
 * Buffer (mapping_id, key) for erpcrm.outbox; key NULL = every key of the
 * mapping.  The key is copied.
 */
void
erpcrm_outbox_add(Oid outbox_relid, int32 mapping_id, text *key)
{
	MemoryContext old;

	if (!callbacks_registered)
	{
		RegisterXactCallback(outbox_xact_callback, NULL);
		RegisterSubXactCallback(outbox_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (buffer_cxt == NULL)
		buffer_cxt = AllocSetContextCreate(TopTransactionContext,
										   "erpcrm outbox buffer",
										   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(buffer_cxt);
	if (nbuffered == capacity)
	{
		capacity = Max(capacity * 2, 256);
		buffer = buffer ? repalloc(buffer, sizeof(BufferedKey) * capacity) :
			palloc(sizeof(BufferedKey) * capacity);
	}
	buffer[nbuffered].outbox_relid = outbox_relid;
	buffer[nbuffered].mapping_id = mapping_id;
	buffer[nbuffered].subxid = GetCurrentSubTransactionId();
	buffer[nbuffered].written = false;
	buffer[nbuffered].key = key ? (text *) pg_detoast_datum_copy((struct varlena *) key) : NULL;
	nbuffered++;
	MemoryContextSwitchTo(old);

	if (nbuffered >= flush_at)
		flush(GetCurrentSubTransactionId());
}

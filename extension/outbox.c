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
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "capture.h"
#include "erpcrm.h"

/* keys buffered before the current subtransaction's are written */
#define OUTBOX_FLUSH_AT		4096
/* rows per heap_multi_insert call */
#define OUTBOX_MULTI_INSERT	1000

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

static void
check_outbox(Relation rel)
{
	if ((rel->rd_rel->relhasindex && RelationGetIndexList(rel) != NIL) ||
		RelationGetDescr(rel)->natts != 2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("erpcrm.outbox has been altered"),
				 errdetail("The outbox must keep its two columns and no index."),
				 errhint("Drop the indexes or columns added to erpcrm.outbox.")));
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
		Relation	rel = table_open(relid, RowExclusiveLock);
		TupleTableSlot *slots[OUTBOX_MULTI_INSERT];
		int			nslots = 0;
		int			made = 0;

		check_outbox(rel);
		for (int i = 0; i < nbuffered; i++)
		{
			BufferedKey *b = &buffer[i];
			TupleTableSlot *slot;

			if ((only != InvalidSubTransactionId && b->subxid != only) ||
				b->outbox_relid != relid)
				continue;
			if (nslots == made)
				slots[made++] = MakeSingleTupleTableSlot(RelationGetDescr(rel),
														 &TTSOpsVirtual);
			slot = slots[nslots++];
			ExecClearTuple(slot);
			slot->tts_values[0] = Int32GetDatum(b->mapping_id);
			slot->tts_isnull[0] = false;
			slot->tts_values[1] = PointerGetDatum(b->key);
			slot->tts_isnull[1] = (b->key == NULL);
			ExecStoreVirtualTuple(slot);
			b->written = true;
			if (nslots == OUTBOX_MULTI_INSERT)
			{
				heap_multi_insert(rel, slots, nslots, GetCurrentCommandId(true), 0, NULL);
				nslots = 0;
			}
		}
		if (nslots > 0)
			heap_multi_insert(rel, slots, nslots, GetCurrentCommandId(true), 0, NULL);
		for (int s = 0; s < made; s++)
			ExecDropSingleTupleTableSlot(slots[s]);
		table_close(rel, NoLock);
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

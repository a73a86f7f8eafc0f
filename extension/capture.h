/*-------------------------------------------------------------------------
 *
 * capture.h
 *	  The capture path: watch definitions compiled for the trigger
 *	  (keyexpr.c) and the trigger itself (capture.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_CAPTURE_H
#define ERPCRM_CAPTURE_H

#include "postgres.h"

#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/rel.h"

typedef struct WatchKey
{
	Oid			tgoid;			/* the trigger */
	Oid			relid;			/* the table it fired on (a partition, maybe) */
} WatchKey;

typedef struct WatchEntry
{
	WatchKey	key;			/* hash key, must be first */
	int32		watch_id;
	int32		mapping_id;
	Oid			outbox_relid;
	ExprState  *expr;			/* the key expression, text-typed */
	ExprContext *econtext;		/* per-row memory, reset after each row */

	/* the last key appended through this entry, to skip repeats */
	LocalTransactionId last_lxid;
	SubTransactionId last_subxid;
	char	   *last_key;
	Size		last_key_len;
	Size		last_key_cap;
} WatchEntry;

/* outbox.c */
extern void erpcrm_outbox_add(Oid outbox_relid, int32 mapping_id, text *key);

extern WatchEntry *erpcrm_watch_entry(Trigger *trigger, Relation rel);
extern Datum erpcrm_eval_key(WatchEntry *entry, TupleTableSlot *slot,
							 bool *isnull);

#endif							/* ERPCRM_CAPTURE_H */

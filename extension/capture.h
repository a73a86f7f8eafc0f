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
	Oid			source;			/* the watched table (maybe an ancestor) */
	Oid			outbox_relid;	/* erpcrm.outbox, or erpcrm.fan_out */
	int32		outbox_id;		/* the mapping, or the watch for fan_out */
	bool		valid;			/* false: the table changed, rebuild */
	LocalTransactionId built_lxid;	/* when it was built */
	MemoryContext cxt;			/* the compiled key */
	ExprState  *expr;			/* the key expression, text-typed; NULL
								 * when it no longer fits the table */
	char	   *problem;		/* why expr is NULL */
	ExprContext *econtext;		/* per-row memory, reset after each row */

	/*
	 * The table's columns the key is computed from, when the key depends on
	 * them alone (immutable, no whole-row or system column): an UPDATE that
	 * leaves them the same leaves the key the same.  nkey_cols < 0: unknown.
	 */
	int			nkey_cols;
	AttrNumber *key_cols;

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

/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *	  Delivery batches in a row, with the network overlapping the database.
 *
 *	  A batch is claimed and read (1), sent (2) and recorded (3), each step
 *	  in delivery.c's order.  While a call of batch N is on the wire, the
 *	  worker does the database work of its neighbours: it records batch N-1
 *	  (sent before it) and then claims and reads batch N+1 (sent after it);
 *	  then it waits for N's answer.  libcurl's multi interface keeps the
 *	  request going meanwhile (hs_http_start, hs_http_progress and
 *	  hs_http_finish in hubspot/http.c).  So at most three batches are
 *	  alive: one sent and not recorded, one on the wire, one claimed ahead;
 *	  each has a memory context of its own, emptied once it is recorded or
 *	  given back.
 *
 *	  What stays exact:
 *
 *	  - The rate limit.  Only one request is on the wire at a time, and it
 *		is started only once the limiter granted it (send.c, call_hubspot);
 *		the overlap is with the database, never with another request.  A
 *		429 is handled by the batch that got it, as before.
 *
 *	  - The order of dependent mappings.  A batch whose rows associate to
 *		keys of another mapping (contacts -> companies, line items -> deals)
 *		reads those keys' HubSpot ids when it is claimed (claim.c).  The
 *		batch on the wire may create, re-create or archive such objects,
 *		and their ids are known only once it is recorded.  So while a batch
 *		of mapping A is on the wire, a batch of mapping B is claimed ahead
 *		only when B has no association to A.  The next batch of the same
 *		mapping always can be: a mapping never associates to itself
 *		(erpcrm.associate refuses cycles).  Batches are recorded in the
 *		order they were sent, and batch N-1 is recorded before anything is
 *		claimed during N's call.
 *
 *		Which batch is claimed ahead: the worker delivers the mappings in
 *		rounds, in dependency order (worker.c).  From the mapping on the
 *		wire, the pipeline walks that order on, into the next round and back
 *		to the same mapping, and claims the first batch it finds.  Mappings
 *		with no key due are passed (the worker skips them when their turn
 *		comes); a mapping that associates to the one on the wire is only
 *		looked at: if it has keys due, the walk stops there, and the worker
 *		records the batch on the wire before it claims them, as without
 *		overlap.  So a backfill of companies overlaps even though contacts,
 *		idle, associate to them.

 *	  - Crash recovery.  Keys claimed ahead are in_flight in sync_state like
 *		those on the wire; after a crash erpcrm._recover makes them all
 *		pending again, and they are sent again: every write is an upsert by
 *		the id property or an update by HubSpot id, so nothing is lost or
 *		duplicated.  After an ERROR the worker forgets the pipeline and
 *		recovers the same way.
 *
 *	  - Backing off.  When a batch ends with a reason for the worker to
 *		stop sending (a refused token, the rate limit, an outage), it is
 *		recorded at once, and the keys claimed ahead are given back
 *		(erpcrm._unclaim): pending again, no attempt counted, as if they
 *		had never been claimed.  SQL older than 1.3 has no _unclaim: then
 *		nothing is claimed ahead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/memutils.h"

#include "activity.h"
#include "kept.h"
#include "delivery_int.h"
#include "hubspot.h"

/* A batch of the pipeline, with its outcome and its memory. */
typedef struct Slot
{
	Batch		b;
	DeliveryOutcome outcome;
	MemoryContext cxt;
	bool		in_use;
} Slot;

/* one sent and not recorded, one on the wire, one claimed ahead */
#define PIPELINE_SLOTS 3

static Slot slots[PIPELINE_SLOTS];

static Slot *sending = NULL;	/* its calls are being made */
static Slot *unrecorded = NULL; /* sent, its outcomes not recorded yet */
static Slot *ahead = NULL;		/* claimed and read ahead, not sent yet */
static int	recorded_synced = 0;	/* keys synced by batches recorded */

/*
 * The walk in the worker's order (a list of mappings, delivered round after
 * round) during sending's call: it starts after position walk_from and may
 * claim ahead.  What it passed is the path: path_left positions from
 * path_next on (counted on, modulo the length of the order), the last of
 * them ahead's mapping when ahead is set, the others without keys due.
 */
static List *walk_order = NIL;
static int	walk_from = -1;		/* -1: no walk during this call */
static List *path_order = NIL;
static int	path_next = 0;
static int	path_left = 0;

/* A new batch of mapping m, in a memory context of its own. */
static Slot *
slot_new(MappingDef *m)
{
	Slot	   *s = NULL;

	for (int i = 0; i < PIPELINE_SLOTS; i++)
		if (!slots[i].in_use)
		{
			s = &slots[i];
			break;
		}
	if (s == NULL)
		elog(ERROR, "erpcrm worker: no free batch in the pipeline");
	if (s->cxt == NULL)
		s->cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm batch",
									   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(s->cxt);
	init_batch(&s->b, m, &s->outcome, s->cxt, 0);
	s->in_use = true;
	return s;
}

static void
slot_free(Slot *s)
{
	MemoryContextReset(s->cxt);
	s->in_use = false;
}

/*
 * The steps of batch s run in its memory context, with its mapping named
 * in the context of errors (after an ERROR, the worker names it too);
 * leave_batch goes back to the caller's.
 */
typedef struct Caller
{
	MemoryContext cxt;
	const char *mapping;
} Caller;

static void
enter_batch(Slot *s, Caller *caller)
{
	caller->cxt = MemoryContextSwitchTo(s->cxt);
	caller->mapping = erpcrm_worker_current_mapping();
	erpcrm_worker_mapping(s->b.mapping->name);
}

static void
leave_batch(Caller *caller)
{
	erpcrm_worker_mapping(caller->mapping);
	MemoryContextSwitchTo(caller->cxt);
}

/* Step 1: claim and read a batch of m; NULL when no key is due. */
static Slot *
claim(MappingDef *m)
{
	Slot	   *s = slot_new(m);
	Caller		caller;
	bool		claimed;

	enter_batch(s, &caller);
	claimed = claim_and_read(&s->b, batch_limit(m));
	leave_batch(&caller);
	if (!claimed)
	{
		slot_free(s);
		return NULL;
	}
	return s;
}

/* Step 3: record a batch sent (its memory is kept until slot_free). */
static void
record(Slot *s)
{
	Caller		caller;

	enter_batch(s, &caller);
	record_batch(&s->b);
	leave_batch(&caller);
	recorded_synced += s->outcome.synced;
}

/* Give back the keys of a batch claimed ahead and not sent. */
static void
give_back(Slot *s)
{
	Oid			types[2] = {INT4OID, TEXTARRAYOID};
	Datum		args[2];
	List	   *ids = NIL;
	Caller		caller;

	enter_batch(s, &caller);
	erpcrm_begin_step("erpcrm: giving back keys claimed ahead");
	erpcrm_worker_step("giving back keys claimed ahead");
	for (int i = 0; i < s->b.nkeys; i++)
		ids = lappend(ids, s->b.keys[i].erp_id);
	args[0] = Int32GetDatum(s->b.mapping->id);
	args[1] = text_array(ids);
	if (erpcrm_execute_kept("SELECT erpcrm._unclaim($1, $2)",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._unclaim failed");
	erpcrm_end_step();
	leave_batch(&caller);
}

/* Take the batch sent and not recorded yet: record it, let it go. */
static void
record_unrecorded(void)
{
	Slot	   *u = unrecorded;

	if (u == NULL)
		return;
	unrecorded = NULL;
	record(u);
	slot_free(u);
}

/* Take the batch claimed ahead: give its keys back, let it go. */
static void
give_back_ahead(void)
{
	Slot	   *a = ahead;

	if (a == NULL)
		return;
	ahead = NULL;
	give_back(a);
	slot_free(a);
}

/*
 * May a batch of next be claimed and read while a batch of m is on the
 * wire, and be sent after it before it is recorded?  Not when next
 * associates to m: its rows carry the HubSpot ids of m's objects as they
 * are when it is read, and m's batch may create, re-create or archive
 * those objects.  (next == m is fine: no mapping associates to itself.)
 */
static bool
may_claim_ahead(MappingDef *m, MappingDef *next)
{
	for (int a = 0; a < next->nassoc; a++)
		if (next->assoc[a].target_id == m->id)
			return false;
	return true;
}

/* Has mapping m keys due?  (claim.c) */
static bool
has_keys_due(MappingDef *m)
{
	bool		due;
	const char *mapping = erpcrm_worker_current_mapping();

	erpcrm_worker_mapping(m->name);
	erpcrm_begin_step("erpcrm: looking for keys due");
	erpcrm_worker_step("looking for keys due");
	due = keys_due(m);
	erpcrm_end_step();
	erpcrm_worker_mapping(mapping);
	return due;
}

/* Forget the path: the worker delivers as it comes again. */
static void
clear_path(void)
{
	path_order = NIL;
	path_next = 0;
	path_left = 0;
}

/*
 * During a call of m's batch (at position walk_from): walk the worker's
 * order on from m, claim the first batch found ahead, and keep the path.
 */
static void
walk(void)
{
	List	   *order = walk_order;
	int			n = list_length(order);
	MappingDef *m = list_nth(order, walk_from);

	path_order = order;
	path_next = walk_from + 1;
	path_left = 0;
	for (int i = 1; i <= n && ahead == NULL; i++)
	{
		MappingDef *c = list_nth(order, (walk_from + i) % n);

		if (!may_claim_ahead(m, c))
		{
			/* c waits for m's batch to be recorded, if it has keys due */
			if (has_keys_due(c))
				break;
		}
		else
			ahead = claim(c);
		path_left++;
		(void) hs_http_progress();
	}
}

/* Does this outcome make the worker stop sending for a while? */
static bool
backs_off(const DeliveryOutcome *o)
{
	return o->auth_failed || o->blocked_until != 0 || o->transient;
}

/*
 * While a call of batch b is on the wire (send.c, between hs_http_start and
 * hs_http_finish): record the batch sent before it, then walk on and claim
 * and read the one after it, moving the request on between the steps.
 * Nothing for calls that are not a delivery batch's (reconcile, erasure,
 * owners), nor for the calls of a batch after its first.  Returns whether
 * it did any work.
 */
bool
erpcrm_while_on_the_wire(Batch *b)
{
	bool		worked = false;

	if (sending == NULL || b != &sending->b)
		return false;
	if (unrecorded != NULL)
	{
		record_unrecorded();
		(void) hs_http_progress();
		worked = true;
	}
	if (walk_from >= 0)
	{
		walk();
		walk_from = -1;
		worked = true;
	}
	return worked;
}

/*
 * One turn of the mapping at position pos of the worker's order (the
 * deliverable mappings, in dependency order, delivered round after round):
 * the batch claimed ahead for it, or nothing when the walk found no key
 * due for it, or else a batch claimed now.  While its first call is on the
 * wire, the batch before it is recorded and the walk claims the next one.
 * It stays unrecorded until the next batch's call or the flush, unless it
 * makes the worker back off: then it is recorded at once, and what was
 * claimed ahead is given back.
 */
void
erpcrm_deliver_batch(List *order, int pos, DeliveryOutcome *outcome)
{
	MappingDef *m = list_nth(order, pos);
	Slot	   *s = NULL;
	int			nkeys;

	memset(outcome, 0, sizeof(*outcome));
	recorded_synced = 0;

	if (path_left > 0 && path_order == order &&
		path_next % list_length(order) == pos)
	{
		path_next++;
		path_left--;
		if (path_left > 0 || ahead == NULL)
			return;				/* the walk found no key due */
		s = ahead;
		ahead = NULL;
	}
	else
	{
		/* as without overlap: what was sent is recorded before a claim */
		clear_path();
		give_back_ahead();
		record_unrecorded();
		s = claim(m);
		if (s == NULL)
		{
			outcome->synced = recorded_synced;
			return;
		}
	}

	nkeys = s->b.nkeys;
	/* SQL older than 1.3 cannot give keys back: no claims ahead */
	walk_order = order;
	walk_from = s->b.unclaim13 ? pos : -1;
	sending = s;
	{
		Caller		caller;

		enter_batch(s, &caller);
		send_batch(&s->b);
		leave_batch(&caller);
	}
	sending = NULL;
	walk_from = -1;
	walk_order = NIL;

	/* no call was made: the batch before is recorded now, in order */
	record_unrecorded();

	if (backs_off(&s->outcome))
	{
		clear_path();
		give_back_ahead();
		/* recording may find that the worker need not back off after all */
		record(s);
		*outcome = s->outcome;
		slot_free(s);
	}
	else
	{
		*outcome = s->outcome;
		unrecorded = s;
	}
	/* what HubSpot taught about itself is this batch's */
	outcome->claimed = nkeys;
	outcome->synced = recorded_synced;
}

/*
 * Before the worker does anything but the next batch: the batch sent is
 * recorded, and the keys claimed ahead are given back.  Returns whether
 * there was anything to do (recording may make keys due again: a key
 * changed while in flight).
 */
bool
erpcrm_delivery_flush(DeliveryOutcome *outcome)
{
	bool		any = (unrecorded != NULL || ahead != NULL);

	memset(outcome, 0, sizeof(*outcome));
	recorded_synced = 0;
	clear_path();
	give_back_ahead();
	record_unrecorded();
	outcome->synced = recorded_synced;
	return any;
}

/*
 * After an ERROR: the batches are dropped unrecorded (erpcrm._recover makes
 * their keys pending again), with the request on the wire, if any.
 */
void
erpcrm_delivery_forget(void)
{
	for (int i = 0; i < PIPELINE_SLOTS; i++)
		if (slots[i].in_use)
			slot_free(&slots[i]);
	sending = unrecorded = ahead = NULL;
	walk_order = NIL;
	walk_from = -1;
	clear_path();
	hs_http_abandon();
}

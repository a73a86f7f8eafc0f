/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  One delivery batch of one mapping, in three steps:
 *
 *	  1. claim.c, in a transaction: claim due keys (erpcrm._claim) and read
 *		 their current rows from the mapping view in one query, together
 *		 with the HubSpot ids of the objects they are associated to; commit;
 *	  2. send.c, with no transaction open: HubSpot batch upsert (by the id
 *		 property), batch update (rows that carry a hubspot_id), batch
 *		 archive (keys that left the view), then the associations (v4);
 *	  3. record.c, in a new transaction: record every key's outcome
 *		 (erpcrm._done, erpcrm._error) and every call (erpcrm._log_call).
 *
 * HubSpot's refusals of single inputs are rows in sync_state, not ERRORs.
 * Everything is allocated in a memory context of the batch, emptied after
 * it is recorded.  pipeline.c runs batches one after the other and lets
 * them overlap: the steps 3 and 1 of the batches around one run while its
 * calls are on the wire.  What the steps share is in delivery_int.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "delivery_int.h"
#include "erpcrm.h"

/* ----------------------------------------------------------------
 * Helpers
 * ----------------------------------------------------------------
 */
void
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

char *
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
 * The batch
 * ----------------------------------------------------------------
 */

/* How many keys a batch of this mapping takes. */
int
batch_limit(MappingDef *m)
{
	int			limit = m->batch_size > 0 ?
		Min(m->batch_size, erpcrm_batch_size) : erpcrm_batch_size;

	return Min(limit, HS_MAX_BATCH);
}

/*
 * May the batch go on calling HubSpot?  Not once HubSpot refused the token
 * (401, 403) or the rate limit stopped it: the keys not sent yet wait.
 */
static bool
may_go_on(const DeliveryOutcome *outcome)
{
	return !outcome->auth_failed && outcome->blocked_until == 0;
}

/*
 * Step 2: send the keys claimed and read (b->keys), in the batch's memory
 * context, with no transaction open.  Every key has its outcome after it.
 */
void
send_batch(Batch *b)
{
	DeliveryOutcome *outcome = b->outcome;
	BatchKey  **upserts;
	BatchKey  **updates;
	BatchKey  **archives;
	int			nup = 0,
				nupd = 0,
				narch = 0;

	upserts = palloc(sizeof(BatchKey *) * b->nkeys);
	updates = palloc(sizeof(BatchKey *) * b->nkeys);
	archives = palloc(sizeof(BatchKey *) * b->nkeys);
	classify_keys(b, upserts, &nup, updates, &nupd, archives, &narch);

	inherit_owners(b);
	if (may_go_on(outcome))
		match_existing(b, upserts, &nup, updates, &nupd);
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
	if (may_go_on(outcome))
		send_objects(b, upserts, nup, false);
	if (may_go_on(outcome))
		send_objects(b, updates, nupd, true);
	if (may_go_on(outcome))
		send_archives(b, archives, narch);
	if (may_go_on(outcome))
		send_associations(b);

	/* keys not sent because HubSpot stopped us wait for it */
	for (int i = 0; i < b->nkeys; i++)
		if (b->keys[i].outcome == KO_NONE && !may_go_on(outcome))
		{
			set_outcome(&b->keys[i], KO_WAIT, 0, outcome->auth_failed ? "AUTH" : "RATE_LIMIT",
						outcome->auth_failed ? outcome->auth_message : "waiting for HubSpot's rate limit",
						NULL);
			b->keys[i].wait_ms = outcome->auth_failed ? 1000 :
				Max(1000, (outcome->blocked_until - GetCurrentTimestamp()) / 1000);
		}
}

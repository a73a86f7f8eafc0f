/*-------------------------------------------------------------------------
 *
 * limiter.c
 *	  One rate limiter per HubSpot portal, in shared memory: the workers of
 *	  databases that send with the same token (to the same URL) share it, so
 *	  that together they never exceed the portal's budget, and a 429 or an
 *	  exhausted window seen by one holds back the others.
 *
 *	  A limiter is found by the SHA-256 of the URL and the token, never by
 *	  the token itself.  Its client-side limit is the lowest
 *	  max_calls_per_10s of the databases that use it.  The limiter's logic
 *	  is ratelimit.c's; here it is only placed in shared memory and locked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "erpcrm.h"
#include "hubspot.h"

typedef struct ErpcrmLimiter
{
	int			users;			/* workers attached; 0 = free */
	uint8		key[PG_SHA256_DIGEST_LENGTH];
	/* followed by the limiter's state (hs_rate_state_size() bytes) */
} ErpcrmLimiter;

#define LIMITER_TRANCHE "erpcrm limiters"

static char *limiters = NULL;	/* nlimiters entries of entry_size bytes */
static int	nlimiters = 0;
static LWLock *limiter_lock = NULL;
static int	attached = -1;		/* this worker's limiter */

static Size
entry_size(void)
{
	return MAXALIGN(sizeof(ErpcrmLimiter)) + MAXALIGN(hs_rate_state_size());
}

static ErpcrmLimiter *
limiter_at(int i)
{
	return (ErpcrmLimiter *) (limiters + entry_size() * i);
}

static void *
state_of(ErpcrmLimiter *l)
{
	return (char *) l + MAXALIGN(sizeof(ErpcrmLimiter));
}

Size
erpcrm_limiters_shmem_size(void)
{
	/* one per worker there can be */
	return mul_size(entry_size(), max_worker_processes);
}

void
erpcrm_limiters_shmem_request(void)
{
	RequestNamedLWLockTranche(LIMITER_TRANCHE, 1);
}

/* In the shmem startup hook, AddinShmemInitLock held. */
void
erpcrm_limiters_shmem_init(void)
{
	bool		found;

	nlimiters = max_worker_processes;
	limiters = ShmemInitStruct("erpcrm limiters", erpcrm_limiters_shmem_size(), &found);
	if (!found)
		memset(limiters, 0, erpcrm_limiters_shmem_size());
	limiter_lock = &(GetNamedLWLockTranche(LIMITER_TRANCHE))->lock;
}

static void
lock_limiter(bool acquire)
{
	if (acquire)
		LWLockAcquire(limiter_lock, LW_EXCLUSIVE);
	else
		LWLockRelease(limiter_lock);
}

/* The lowest budget of the workers using limiter i (lock held). */
static int
lowest_budget(int i)
{
	int			lowest = 0;

	for (int s = 0; s < erpcrm_cluster->nslots; s++)
	{
		ErpcrmShared *slot = &erpcrm_cluster->slots[s];
		int			budget = 0;

		SpinLockAcquire(&slot->mutex);
		if (slot->in_use && slot->limiter == i && slot->worker_pid != 0)
			budget = slot->max_calls;
		SpinLockRelease(&slot->mutex);
		if (budget > 0 && (lowest == 0 || budget < lowest))
			lowest = budget;
	}
	return lowest;
}

static void
set_slot_limiter(int i, int budget)
{
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->limiter = i;
	erpcrm_shared->max_calls = budget;
	SpinLockRelease(&erpcrm_shared->mutex);
}

/* Leave the shared limiter (at exit, or for another token). */
void
erpcrm_limiter_detach(void)
{
	int			i = attached;

	if (i < 0 || limiters == NULL)
		return;
	LWLockAcquire(limiter_lock, LW_EXCLUSIVE);
	set_slot_limiter(-1, 0);
	if (--limiter_at(i)->users <= 0)
		limiter_at(i)->users = 0;
	else
	{
		/* the others' lowest budget applies now */
		hs_rate_use(state_of(limiter_at(i)), NULL);
		hs_rate_configure(lowest_budget(i), 10000);
	}
	LWLockRelease(limiter_lock);
	attached = -1;
	hs_rate_use(NULL, NULL);
}

/*
 * Use the limiter of the portal this URL and token reach, with this
 * worker's budget (calls per 10 s).  An empty token, or no shared memory
 * left, keeps a limiter of this process's own.
 */
void
erpcrm_limiter_attach(const char *url, const char *token, int budget)
{
	uint8		key[PG_SHA256_DIGEST_LENGTH];
	pg_cryptohash_ctx *ctx;
	int			found = -1;
	int			free_entry = -1;
	bool		own_xact;
	MemoryContext caller = CurrentMemoryContext;

	if (limiters == NULL || erpcrm_shared == NULL || token == NULL || token[0] == '\0')
	{
		erpcrm_limiter_detach();
		hs_rate_configure(budget, 10000);
		return;
	}

	/* the hash needs a resource owner: a transaction gives one */
	own_xact = !IsTransactionState();
	if (own_xact)
		StartTransactionCommand();
	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) url, strlen(url) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) token, strlen(token)) < 0 ||
		pg_cryptohash_final(ctx, key, sizeof(key)) < 0)
		elog(ERROR, "could not compute the key of a rate limiter");
	pg_cryptohash_free(ctx);
	if (own_xact)
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(caller);
	}

	if (attached >= 0 && memcmp(limiter_at(attached)->key, key, sizeof(key)) == 0)
		found = attached;
	else
		erpcrm_limiter_detach();

	LWLockAcquire(limiter_lock, LW_EXCLUSIVE);
	for (int i = 0; i < nlimiters && found < 0; i++)
	{
		ErpcrmLimiter *l = limiter_at(i);

		if (l->users > 0 && memcmp(l->key, key, sizeof(key)) == 0)
			found = i;
		else if (l->users == 0 && free_entry < 0)
			free_entry = i;
	}
	if (found < 0 && free_entry >= 0)
	{
		ErpcrmLimiter *l = limiter_at(free_entry);

		memset(l, 0, entry_size());
		memcpy(l->key, key, sizeof(key));
		hs_rate_state_init(state_of(l));
		found = free_entry;
	}
	if (found < 0)
	{
		LWLockRelease(limiter_lock);
		hs_rate_configure(budget, 10000);
		return;
	}
	if (attached != found)
		limiter_at(found)->users++;
	attached = found;
	set_slot_limiter(found, budget);
	hs_rate_use(state_of(limiter_at(found)), NULL);
	hs_rate_configure(lowest_budget(found), 10000);
	LWLockRelease(limiter_lock);
	explicit_bzero(key, sizeof(key));

	/* from now on every call of the limiter takes the lock */
	hs_rate_use(state_of(limiter_at(found)), lock_limiter);
}

/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Client-side rate limiter for HubSpot calls.
 *
 * Four independent reasons to wait, the longest of which wins:
 *
 * 1. Our own rolling window: at most calls_per_window calls may start in
 *	  any window_ms.  The start times of the last calls are kept in a ring
 *	  buffer.
 * 2. A 429: calls are blocked until Retry-After, else until the window the
 *	  answer's policyName names has passed.
 * 3. The server's window: when the last answer said
 *	  X-HubSpot-RateLimit-Remaining: 0 (other apps may share the account's
 *	  budget), wait until that window plausibly has room again.
 * 4. The daily budget: when X-HubSpot-RateLimit-Daily-Remaining was 0, wait
 *	  until HubSpot's next daily reset: midnight in the portal's time zone,
 *	  which the caller learns from HubSpot and passes to
 *	  rate_set_daily_reset(); until it does, the next midnight UTC.  A
 *	  later answer showing a remaining budget > 0 lifts the block.
 *
 * Pure logic on TimestampTz values (int64 microseconds since 2000-01-01
 * UTC): no I/O and no calls into the backend, so that a unit test can link
 * this file alone.  The state is the process's own, or one the caller
 * places elsewhere (shared memory) with hs_rate_use().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"

#include "hubspot.h"

/* Largest calls_per_window kept track of. */
#define HS_RATE_MAX_CALLS	10000

/* Used when neither the settings nor the headers give a window. */
#define HS_RATE_DEFAULT_WINDOW_MS	10000

/*
 * HubSpot's search endpoints take four requests a second per token
 * (developers.hubspot.com/docs/api/usage-details): search calls start at
 * least this far apart, with a margin for the time a call takes to arrive.
 */
#define HS_SEARCH_SPACING_MS	260

/* More ahead than this is a clock that jumped, not searches queued. */
#define HS_SEARCH_MAX_QUEUE_MS	10000

/* No single wait is longer than this (clock jumps, absurd Retry-After). */
#define HS_RATE_MAX_DELAY_MS	(25L * 3600 * 1000)

/*
 * Margin added when the server's window is inferred from our own call start
 * times: HubSpot counts a call when it arrives, a little after we start it.
 */
#define HS_RATE_MARGIN_MS	250

/*
 * HubSpot counts a call when it arrives, a little after we start it: our own
 * window is held this much longer so that the skew never puts one call too
 * many into HubSpot's window.
 */
#define HS_OWN_WINDOW_MARGIN_US	(50 * 1000)

/*
 * The limiter's state.  A process has one of its own; hs_rate_use() points
 * the functions below at another, for example one in shared memory that
 * several processes calling with the same token share (the caller then
 * gives a lock function, taken around every public function).
 */
struct HsRateState
{
	/* our own window */
	int			rate_capacity;	/* calls_per_window; 0 = no client limit */
	int64		rate_window_us;
	TimestampTz ring[HS_RATE_MAX_CALLS];
	int			ring_head;		/* index of the oldest kept call */
	int			ring_count;

	/* blocks */
	TimestampTz blocked_until;	/* by 429s; 0 = none */
	TimestampTz daily_blocked_until;	/* daily budget spent */

	/* latest header values and when they were seen */
	long		last_remaining;
	TimestampTz last_remaining_at;
	long		last_interval_ms;
	long		last_max;
	long		last_secondly_remaining;
	long		last_secondly_limit;	/* X-HubSpot-RateLimit-Secondly */
	TimestampTz last_secondly_at;
	long		last_daily_remaining;

	/* HubSpot's next daily reset, when the caller learned it (0 = unknown) */
	TimestampTz daily_reset_at;

	/* the earliest start of the next search call (hs_rate_search_slot) */
	TimestampTz next_search_at;
};

static HsRateState own_state = {
	.last_remaining = -1,
	.last_interval_ms = -1,
	.last_max = -1,
	.last_secondly_remaining = -1,
	.last_secondly_limit = -1,
	.last_daily_remaining = -1,
};
static HsRateState *rs = &own_state;
static HsRateLock rate_lock = NULL;

/* ----------------------------------------------------------------
 * Helpers
 * ----------------------------------------------------------------
 */

static int64
ms_to_us(long ms)
{
	return (int64) ms * INT64CONST(1000);
}

/* Microseconds to milliseconds, rounded up, clamped to [0, max delay]. */
static long
us_to_ms_ceil(int64 us)
{
	int64		ms;

	if (us <= 0)
		return 0;
	ms = (us + 999) / 1000;
	if (ms > HS_RATE_MAX_DELAY_MS)
		ms = HS_RATE_MAX_DELAY_MS;
	return (long) ms;
}

/* The first midnight UTC strictly after t. */
static TimestampTz
next_midnight_utc(TimestampTz t)
{
	int64		day = t / USECS_PER_DAY;

	if (t < 0 && t % USECS_PER_DAY != 0)
		day--;					/* floor for times before 2000 */
	return (day + 1) * USECS_PER_DAY;
}

/* The next daily reset after t: the portal's, else midnight UTC. */
static TimestampTz
next_daily_reset(TimestampTz t)
{
	if (rs->daily_reset_at > t)
		return rs->daily_reset_at;
	return next_midnight_utc(t);
}

/* The i-th kept call, 0 = oldest. */
static TimestampTz
ring_at(int i)
{
	return rs->ring[(rs->ring_head + i) % HS_RATE_MAX_CALLS];
}

/* The server's window length in ms, best guess. */
static long
window_ms_guess(void)
{
	if (rs->last_interval_ms > 0)
		return rs->last_interval_ms;
	if (rs->rate_window_us > 0)
		return (long) (rs->rate_window_us / 1000);
	return HS_RATE_DEFAULT_WINDOW_MS;
}

/*
 * When the server's rolling window, exhausted at the answer seen at
 * last_remaining_at, plausibly has room again.  0 when it is not known to
 * be exhausted.
 *
 * The safe bound is a full interval after that answer: every call counted
 * then has left the window by that time.  When our own calls alone fill
 * X-HubSpot-RateLimit-Max within the interval before the answer, the window
 * frees as soon as the oldest of those leaves it, which is usually much
 * sooner; that holds only when no other app shares the budget, which the
 * headers confirm (our count reached Max).
 */
static TimestampTz
server_window_free_at(void)
{
	int64		interval_us;
	TimestampTz safe;
	int			ours;
	int			i;

	if (rs->last_remaining != 0)
		return 0;
	interval_us = ms_to_us(window_ms_guess());
	safe = rs->last_remaining_at + interval_us;

	if (rs->last_max <= 0 || rs->last_max > rs->ring_count)
		return safe;

	/* count our calls in (answer - interval, answer] */
	ours = 0;
	for (i = rs->ring_count - 1; i >= 0; i--)
	{
		TimestampTz t = ring_at(i);

		if (t > rs->last_remaining_at)
			continue;
		if (t <= rs->last_remaining_at - interval_us)
			break;
		ours++;
		if (ours == rs->last_max)
		{
			TimestampTz freed = t + interval_us + ms_to_us(HS_RATE_MARGIN_MS);

			return Min(freed, safe);
		}
	}
	return safe;
}

/* ----------------------------------------------------------------
 * The limiter's functions, on the state in use (rs), lock held
 * ----------------------------------------------------------------
 */

/*
 * Set the client-side limit: at most calls_per_window calls started in any
 * window_ms.  calls_per_window <= 0 or window_ms <= 0 disables the client
 * limit (429s and headers are still obeyed).  calls_per_window is capped at
 * HS_RATE_MAX_CALLS.  Called again (reload), the newest calls that fit are
 * kept; blocks and header values are kept too.
 */
static void
rate_configure(int calls_per_window, int window_ms)
{
	int			newcap;

	if (calls_per_window <= 0 || window_ms <= 0)
	{
		rs->rate_capacity = 0;
		rs->rate_window_us = (window_ms > 0) ? ms_to_us(window_ms) : 0;
		rs->ring_head = 0;
		rs->ring_count = 0;
		return;
	}
	newcap = Min(calls_per_window, HS_RATE_MAX_CALLS);

	/* keep the newest calls that fit: drop the oldest surplus */
	if (rs->ring_count > newcap)
	{
		int			drop = rs->ring_count - newcap;

		rs->ring_head = (rs->ring_head + drop) % HS_RATE_MAX_CALLS;
		rs->ring_count = newcap;
	}
	rs->rate_capacity = newcap;
	rs->rate_window_us = ms_to_us(window_ms);
}

/*
 * Milliseconds to wait before the next call may start; 0 = go now.
 */
static long
rate_delay_ms(TimestampTz now)
{
	int64		wait_us = 0;
	TimestampTz t;

	/* 1. our own window: the window is (now - window, now] */
	if (rs->rate_capacity > 0)
	{
		while (rs->ring_count > 0 &&
			   ring_at(0) <= now - rs->rate_window_us - HS_OWN_WINDOW_MARGIN_US)
		{
			rs->ring_head = (rs->ring_head + 1) % HS_RATE_MAX_CALLS;
			rs->ring_count--;
		}
		if (rs->ring_count >= rs->rate_capacity)
		{
			/* the oldest of the last rate_capacity calls must leave first */
			t = ring_at(rs->ring_count - rs->rate_capacity);
			wait_us = Max(wait_us, t + rs->rate_window_us + HS_OWN_WINDOW_MARGIN_US - now);
		}
	}

	/* 2. a 429 */
	if (rs->blocked_until > now)
		wait_us = Max(wait_us, rs->blocked_until - now);

	/* 3. the server's window, as last seen */
	t = server_window_free_at();
	if (t > now)
		wait_us = Max(wait_us, t - now);
	if (rs->last_secondly_limit > 0 && rs->ring_count >= rs->last_secondly_limit)
	{
		/*
		 * HubSpot's per-second limit: pace our own calls to it (the oldest
		 * of the last "secondly" calls must be a second old, plus the skew
		 * margin), instead of pausing a whole second whenever an answer says
		 * none are left.
		 */
		t = ring_at(rs->ring_count - rs->last_secondly_limit) + USECS_PER_SEC +
			HS_OWN_WINDOW_MARGIN_US;
		if (t > now)
			wait_us = Max(wait_us, t - now);
	}
	else if (rs->last_secondly_remaining == 0)
	{
		t = rs->last_secondly_at + USECS_PER_SEC;
		if (t > now)
			wait_us = Max(wait_us, t - now);
	}

	/* 4. the daily budget */
	if (rs->daily_blocked_until > now)
		wait_us = Max(wait_us, rs->daily_blocked_until - now);

	return us_to_ms_ceil(wait_us);
}

/*
 * Account one call started at now.  Start times are kept in order: a clock
 * that went backwards is taken as the newest time seen.
 */
static void
rate_note_call(TimestampTz now)
{
	int			tail;

	if (rs->rate_capacity <= 0)
		return;
	if (rs->ring_count > 0)
	{
		TimestampTz newest = ring_at(rs->ring_count - 1);

		if (now < newest)
			now = newest;
	}
	if (rs->ring_count >= rs->rate_capacity)
	{
		/* full: the oldest is overwritten */
		rs->ring_head = (rs->ring_head + 1) % HS_RATE_MAX_CALLS;
		rs->ring_count--;
	}
	tail = (rs->ring_head + rs->ring_count) % HS_RATE_MAX_CALLS;
	rs->ring[tail] = now;
	rs->ring_count++;
}

/*
 * Learn from an answer's headers.  Absent headers (-1) leave what was
 * learnt before, so that an answer without headers (search, OAuth) does not
 * erase a known state.
 */
static void
rate_note_response(const HsResponse *resp, TimestampTz now)
{
	if (resp == NULL)
		return;
	if (resp->rl_interval_ms > 0)
		rs->last_interval_ms = resp->rl_interval_ms;
	if (resp->rl_max > 0)
		rs->last_max = resp->rl_max;
	if (resp->rl_remaining >= 0)
	{
		rs->last_remaining = resp->rl_remaining;
		rs->last_remaining_at = now;
	}
	if (resp->rl_secondly > 0)
		rs->last_secondly_limit = resp->rl_secondly;
	if (resp->rl_secondly_remaining >= 0)
	{
		rs->last_secondly_remaining = resp->rl_secondly_remaining;
		rs->last_secondly_at = now;
	}
	if (resp->rl_daily_remaining >= 0)
	{
		rs->last_daily_remaining = resp->rl_daily_remaining;
		if (resp->rl_daily_remaining == 0)
			rs->daily_blocked_until = next_daily_reset(now);
		else
			rs->daily_blocked_until = 0;
	}
}

/*
 * A 429 arrived at now: block calls until Retry-After (when present), else
 * until the window policy_name names has passed.  Returns the time until
 * which calls are blocked (the later of this and any earlier block).
 */
static TimestampTz
rate_note_429(const HsResponse *resp, const char *policy_name,
				 TimestampTz now)
{
	TimestampTz until;

	rate_note_response(resp, now);

	if (resp != NULL && resp->retry_after_ms >= 0)
		until = now + ms_to_us(Min(resp->retry_after_ms, HS_RATE_MAX_DELAY_MS));
	else if (policy_name != NULL &&
			 strcmp(policy_name, "TEN_SECONDLY_ROLLING") == 0)
	{
		long		ms;

		if (resp != NULL && resp->rl_interval_ms > 0)
			ms = resp->rl_interval_ms;
		else
			ms = window_ms_guess();
		until = now + ms_to_us(ms);
	}
	else if (policy_name != NULL && strcmp(policy_name, "SECONDLY") == 0)
		until = now + USECS_PER_SEC;
	else if (policy_name != NULL && strcmp(policy_name, "DAILY") == 0)
	{
		/*
		 * Kept as a daily block only, so that an answer showing a daily
		 * budget again (e.g. the portal's midnight came first) lifts it.
		 */
		rs->daily_blocked_until = Max(rs->daily_blocked_until, next_daily_reset(now));
		return Max(rs->blocked_until, rs->daily_blocked_until);
	}
	else
	{
		long		ms;

		ms = (rs->rate_window_us > 0) ? (long) (rs->rate_window_us / 1000) :
			HS_RATE_DEFAULT_WINDOW_MS;
		until = now + ms_to_us(ms);
	}

	rs->blocked_until = Max(rs->blocked_until, until);
	return rs->blocked_until;
}

static long
rate_window_remaining(void)
{
	return rs->last_remaining;
}

/*
 * HubSpot's next daily reset (midnight in the portal's time zone), learned
 * by the caller.  A daily block in force moves to it.
 */
static void
rate_set_daily_reset(TimestampTz reset, TimestampTz now)
{
	if (reset <= now)
		return;
	rs->daily_reset_at = reset;
	if (rs->daily_blocked_until > now)
		rs->daily_blocked_until = reset;
}

/* When the learned reset has passed (or none was learned): 0. */
static TimestampTz
rate_daily_reset(TimestampTz now)
{
	return rs->daily_reset_at > now ? rs->daily_reset_at : 0;
}

static long
rate_daily_remaining(void)
{
	return rs->last_daily_remaining;
}

/* The wait before a search may start; the place after it is taken. */
static long
rate_search_slot(TimestampTz now)
{
	TimestampTz slot = Max(now, rs->next_search_at);

	/* a clock that jumped back leaves no wait of hours behind */
	if (slot - now > ms_to_us(HS_SEARCH_MAX_QUEUE_MS))
		slot = now;
	rs->next_search_at = slot + ms_to_us(HS_SEARCH_SPACING_MS);
	return us_to_ms_ceil(slot - now);
}

/* ----------------------------------------------------------------
 * Public functions: the above, under the lock of the state in use
 * ----------------------------------------------------------------
 */

#define LOCKED(expr) \
	do { \
		if (rate_lock) \
			rate_lock(true); \
		expr; \
		if (rate_lock) \
			rate_lock(false); \
	} while (0)

/* Bytes a limiter's state takes (to place one in shared memory). */
size_t
hs_rate_state_size(void)
{
	return sizeof(HsRateState);
}

/* A new limiter's state: no limit, no calls, nothing learnt. */
void
hs_rate_state_init(HsRateState *state)
{
	memset(state, 0, sizeof(*state));
	state->last_remaining = -1;
	state->last_interval_ms = -1;
	state->last_max = -1;
	state->last_secondly_remaining = -1;
	state->last_secondly_limit = -1;
	state->last_daily_remaining = -1;
}

/*
 * Use this state from now on (NULL: the process's own), with this lock
 * taken around every public function (NULL: none, the caller holds it or
 * the state is the process's alone).
 */
void
hs_rate_use(HsRateState *state, HsRateLock lock)
{
	rs = state != NULL ? state : &own_state;
	rate_lock = lock;
}

void
hs_rate_configure(int calls_per_window, int window_ms)
{
	LOCKED(rate_configure(calls_per_window, window_ms));
}

long
hs_rate_delay_ms(TimestampTz now)
{
	long		result;

	LOCKED(result = rate_delay_ms(now));
	return result;
}

/*
 * Milliseconds to wait before the next call may start; when 0, the call is
 * accounted at once, so that processes sharing the state never both take
 * the last place of a window.
 */
long
hs_rate_take(TimestampTz now)
{
	long		result;

	LOCKED(result = rate_delay_ms(now); if (result == 0) rate_note_call(now));
	return result;
}

void
hs_rate_note_call(TimestampTz now)
{
	LOCKED(rate_note_call(now));
}

void
hs_rate_note_response(const HsResponse *resp, TimestampTz now)
{
	LOCKED(rate_note_response(resp, now));
}

TimestampTz
hs_rate_note_429(const HsResponse *resp, const char *policy_name,
				 TimestampTz now)
{
	TimestampTz result;

	LOCKED(result = rate_note_429(resp, policy_name, now));
	return result;
}

/*
 * Milliseconds to wait before a search call may start, its place taken at
 * once: every search of the processes sharing the state (matching,
 * subscriptions, reconcile, of every database with the same token) waits
 * its turn, so that together they stay within HubSpot's search limit.
 */
long
hs_rate_search_slot(TimestampTz now)
{
	long		result;

	LOCKED(result = rate_search_slot(now));
	return result;
}

long
hs_rate_window_remaining(void)
{
	long		result;

	LOCKED(result = rate_window_remaining());
	return result;
}

void
hs_rate_set_daily_reset(TimestampTz reset, TimestampTz now)
{
	LOCKED(rate_set_daily_reset(reset, now));
}

TimestampTz
hs_rate_daily_reset(TimestampTz now)
{
	TimestampTz result;

	LOCKED(result = rate_daily_reset(now));
	return result;
}

long
hs_rate_daily_remaining(void)
{
	long		result;

	LOCKED(result = rate_daily_remaining());
	return result;
}

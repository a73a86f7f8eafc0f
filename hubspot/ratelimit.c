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
 *	  hs_rate_set_daily_reset(); until it does, the next midnight UTC.  A
 *	  later answer showing a remaining budget > 0 lifts the block.
 *
 * Pure logic on TimestampTz values (int64 microseconds since 2000-01-01
 * UTC): no I/O and no calls into the backend, so that a unit test can link
 * this file alone.  All state is static (one worker per process).
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

/* our own window */
static int	rate_capacity = 0;	/* calls_per_window; 0 = no client limit */
static int64 rate_window_us = 0;
static TimestampTz ring[HS_RATE_MAX_CALLS];
static int	ring_head = 0;		/* index of the oldest kept call */
static int	ring_count = 0;

/* blocks */
static TimestampTz blocked_until = 0;	/* by 429s; 0 = none */
static TimestampTz daily_blocked_until = 0; /* daily budget spent */

/* latest header values and when they were seen */
static long last_remaining = -1;
static TimestampTz last_remaining_at = 0;
static long last_interval_ms = -1;
static long last_max = -1;
static long last_secondly_remaining = -1;
static long last_secondly_limit = -1;	/* X-HubSpot-RateLimit-Secondly */
static TimestampTz last_secondly_at = 0;
static long last_daily_remaining = -1;

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

/* HubSpot's next daily reset, when the caller learned it (0 = unknown). */
static TimestampTz daily_reset_at = 0;

/* The next daily reset after t: the portal's, else midnight UTC. */
static TimestampTz
next_daily_reset(TimestampTz t)
{
	if (daily_reset_at > t)
		return daily_reset_at;
	return next_midnight_utc(t);
}

/* The i-th kept call, 0 = oldest. */
static TimestampTz
ring_at(int i)
{
	return ring[(ring_head + i) % HS_RATE_MAX_CALLS];
}

/* The server's window length in ms, best guess. */
static long
window_ms_guess(void)
{
	if (last_interval_ms > 0)
		return last_interval_ms;
	if (rate_window_us > 0)
		return (long) (rate_window_us / 1000);
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

	if (last_remaining != 0)
		return 0;
	interval_us = ms_to_us(window_ms_guess());
	safe = last_remaining_at + interval_us;

	if (last_max <= 0 || last_max > ring_count)
		return safe;

	/* count our calls in (answer - interval, answer] */
	ours = 0;
	for (i = ring_count - 1; i >= 0; i--)
	{
		TimestampTz t = ring_at(i);

		if (t > last_remaining_at)
			continue;
		if (t <= last_remaining_at - interval_us)
			break;
		ours++;
		if (ours == last_max)
		{
			TimestampTz freed = t + interval_us + ms_to_us(HS_RATE_MARGIN_MS);

			return Min(freed, safe);
		}
	}
	return safe;
}

/* ----------------------------------------------------------------
 * Public functions
 * ----------------------------------------------------------------
 */

/*
 * Set the client-side limit: at most calls_per_window calls started in any
 * window_ms.  calls_per_window <= 0 or window_ms <= 0 disables the client
 * limit (429s and headers are still obeyed).  calls_per_window is capped at
 * HS_RATE_MAX_CALLS.  Called again (reload), the newest calls that fit are
 * kept; blocks and header values are kept too.
 */
void
hs_rate_configure(int calls_per_window, int window_ms)
{
	int			newcap;

	if (calls_per_window <= 0 || window_ms <= 0)
	{
		rate_capacity = 0;
		rate_window_us = (window_ms > 0) ? ms_to_us(window_ms) : 0;
		ring_head = 0;
		ring_count = 0;
		return;
	}
	newcap = Min(calls_per_window, HS_RATE_MAX_CALLS);

	/* keep the newest calls that fit: drop the oldest surplus */
	if (ring_count > newcap)
	{
		int			drop = ring_count - newcap;

		ring_head = (ring_head + drop) % HS_RATE_MAX_CALLS;
		ring_count = newcap;
	}
	rate_capacity = newcap;
	rate_window_us = ms_to_us(window_ms);
}

/*
 * Milliseconds to wait before the next call may start; 0 = go now.
 */
long
hs_rate_delay_ms(TimestampTz now)
{
	int64		wait_us = 0;
	TimestampTz t;

	/* 1. our own window: the window is (now - window, now] */
	if (rate_capacity > 0)
	{
		while (ring_count > 0 &&
			   ring_at(0) <= now - rate_window_us - HS_OWN_WINDOW_MARGIN_US)
		{
			ring_head = (ring_head + 1) % HS_RATE_MAX_CALLS;
			ring_count--;
		}
		if (ring_count >= rate_capacity)
		{
			/* the oldest of the last rate_capacity calls must leave first */
			t = ring_at(ring_count - rate_capacity);
			wait_us = Max(wait_us, t + rate_window_us + HS_OWN_WINDOW_MARGIN_US - now);
		}
	}

	/* 2. a 429 */
	if (blocked_until > now)
		wait_us = Max(wait_us, blocked_until - now);

	/* 3. the server's window, as last seen */
	t = server_window_free_at();
	if (t > now)
		wait_us = Max(wait_us, t - now);
	if (last_secondly_limit > 0 && ring_count >= last_secondly_limit)
	{
		/*
		 * HubSpot's per-second limit: pace our own calls to it (the oldest
		 * of the last "secondly" calls must be a second old, plus the skew
		 * margin), instead of pausing a whole second whenever an answer says
		 * none are left.
		 */
		t = ring_at(ring_count - last_secondly_limit) + USECS_PER_SEC +
			HS_OWN_WINDOW_MARGIN_US;
		if (t > now)
			wait_us = Max(wait_us, t - now);
	}
	else if (last_secondly_remaining == 0)
	{
		t = last_secondly_at + USECS_PER_SEC;
		if (t > now)
			wait_us = Max(wait_us, t - now);
	}

	/* 4. the daily budget */
	if (daily_blocked_until > now)
		wait_us = Max(wait_us, daily_blocked_until - now);

	return us_to_ms_ceil(wait_us);
}

/*
 * Account one call started at now.  Start times are kept in order: a clock
 * that went backwards is taken as the newest time seen.
 */
void
hs_rate_note_call(TimestampTz now)
{
	int			tail;

	if (rate_capacity <= 0)
		return;
	if (ring_count > 0)
	{
		TimestampTz newest = ring_at(ring_count - 1);

		if (now < newest)
			now = newest;
	}
	if (ring_count >= rate_capacity)
	{
		/* full: the oldest is overwritten */
		ring_head = (ring_head + 1) % HS_RATE_MAX_CALLS;
		ring_count--;
	}
	tail = (ring_head + ring_count) % HS_RATE_MAX_CALLS;
	ring[tail] = now;
	ring_count++;
}

/*
 * Learn from an answer's headers.  Absent headers (-1) leave what was
 * learnt before, so that an answer without headers (search, OAuth) does not
 * erase a known state.
 */
void
hs_rate_note_response(const HsResponse *resp, TimestampTz now)
{
	if (resp == NULL)
		return;
	if (resp->rl_interval_ms > 0)
		last_interval_ms = resp->rl_interval_ms;
	if (resp->rl_max > 0)
		last_max = resp->rl_max;
	if (resp->rl_remaining >= 0)
	{
		last_remaining = resp->rl_remaining;
		last_remaining_at = now;
	}
	if (resp->rl_secondly > 0)
		last_secondly_limit = resp->rl_secondly;
	if (resp->rl_secondly_remaining >= 0)
	{
		last_secondly_remaining = resp->rl_secondly_remaining;
		last_secondly_at = now;
	}
	if (resp->rl_daily_remaining >= 0)
	{
		last_daily_remaining = resp->rl_daily_remaining;
		if (resp->rl_daily_remaining == 0)
			daily_blocked_until = next_daily_reset(now);
		else
			daily_blocked_until = 0;
	}
}

/*
 * A 429 arrived at now: block calls until Retry-After (when present), else
 * until the window policy_name names has passed.  Returns the time until
 * which calls are blocked (the later of this and any earlier block).
 */
TimestampTz
hs_rate_note_429(const HsResponse *resp, const char *policy_name,
				 TimestampTz now)
{
	TimestampTz until;

	hs_rate_note_response(resp, now);

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
		daily_blocked_until = Max(daily_blocked_until, next_daily_reset(now));
		return Max(blocked_until, daily_blocked_until);
	}
	else
	{
		long		ms;

		ms = (rate_window_us > 0) ? (long) (rate_window_us / 1000) :
			HS_RATE_DEFAULT_WINDOW_MS;
		until = now + ms_to_us(ms);
	}

	blocked_until = Max(blocked_until, until);
	return blocked_until;
}

long
hs_rate_window_remaining(void)
{
	return last_remaining;
}

/*
 * HubSpot's next daily reset (midnight in the portal's time zone), learned
 * by the caller.  A daily block in force moves to it.
 */
void
hs_rate_set_daily_reset(TimestampTz reset, TimestampTz now)
{
	if (reset <= now)
		return;
	daily_reset_at = reset;
	if (daily_blocked_until > now)
		daily_blocked_until = reset;
}

/* When the learned reset has passed (or none was learned): 0. */
TimestampTz
hs_rate_daily_reset(TimestampTz now)
{
	return daily_reset_at > now ? daily_reset_at : 0;
}

long
hs_rate_daily_remaining(void)
{
	return last_daily_remaining;
}

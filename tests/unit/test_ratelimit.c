/*-------------------------------------------------------------------------
 *
 * test_ratelimit.c
 *	  Unit test of hubspot/ratelimit.c, linked with that file alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "hubspot.h"

/* plain libc printing: no libpgport needed */
#undef printf
#undef fprintf

static int	failures = 0;

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			failures++; \
		} \
	} while (0)

#define MS(x)	((TimestampTz) (x) * 1000)
#define DAY		((TimestampTz) 86400 * 1000000)

static HsResponse
no_headers(void)
{
	HsResponse	r;

	memset(&r, 0, sizeof(r));
	r.rl_daily = r.rl_daily_remaining = r.rl_interval_ms = r.rl_max = -1;
	r.rl_remaining = r.rl_secondly = r.rl_secondly_remaining = -1;
	r.retry_after_ms = -1;
	return r;
}

int
main(void)
{
	TimestampTz t0 = DAY * 9000 + MS(3600 * 1000);	/* 01:00 UTC some day */
	HsResponse	r;
	int			i;

	/* own window: 3 calls per 1000 ms */
	hs_rate_configure(3, 1000);
	CHECK(hs_rate_delay_ms(t0) == 0);
	CHECK(hs_rate_window_remaining() == -1);
	CHECK(hs_rate_daily_remaining() == -1);
	hs_rate_note_call(t0);
	hs_rate_note_call(t0 + MS(100));
	CHECK(hs_rate_delay_ms(t0 + MS(100)) == 0);
	hs_rate_note_call(t0 + MS(200));
	/* full: the oldest (t0) leaves at t0+1000, plus the 50 ms skew margin */
	CHECK(hs_rate_delay_ms(t0 + MS(200)) == 850);
	CHECK(hs_rate_delay_ms(t0 + MS(999)) == 51);
	CHECK(hs_rate_delay_ms(t0 + MS(1000)) == 50);
	CHECK(hs_rate_delay_ms(t0 + MS(1050)) == 0);
	hs_rate_note_call(t0 + MS(1050));
	/* now t0+100, t0+200, t0+1050: next frees at t0+1150 */
	CHECK(hs_rate_delay_ms(t0 + MS(1050)) == 100);
	/* rounding up of sub-millisecond waits */
	CHECK(hs_rate_delay_ms(t0 + MS(1050) + 1) == 100);

	/* reconfigure smaller: keep the newest 2 (t0+200, t0+1050) */
	hs_rate_configure(2, 1000);
	CHECK(hs_rate_delay_ms(t0 + MS(1050)) == 200);
	/* reconfigure larger: room again */
	hs_rate_configure(5, 1000);
	CHECK(hs_rate_delay_ms(t0 + MS(1050)) == 0);
	/* a clock going backwards does not break ordering */
	hs_rate_note_call(t0 + MS(500));
	hs_rate_note_call(t0 + MS(1100));
	hs_rate_note_call(t0 + MS(1100));
	CHECK(hs_rate_delay_ms(t0 + MS(1100)) == 150);

	/* disabled client limit */
	hs_rate_configure(0, 1000);
	for (i = 0; i < 100; i++)
		hs_rate_note_call(t0 + MS(2000));
	CHECK(hs_rate_delay_ms(t0 + MS(2000)) == 0);

	/* large capacity capped, wrap-around of the ring */
	hs_rate_configure(20000, 10000);
	for (i = 0; i < 25000; i++)
		hs_rate_note_call(t0 + MS(3000) + i);
	CHECK(hs_rate_delay_ms(t0 + MS(3000) + 25000) > 0);
	CHECK(hs_rate_delay_ms(t0 + MS(3000) + 25000) <= 10050);

	/* reset to a clean client window for the server tests */
	hs_rate_configure(0, 10000);
	hs_rate_configure(100, 10000);
	t0 += MS(60000);

	/* headers: remaining 0 with other apps sharing: wait a full interval */
	r = no_headers();
	r.rl_max = 100;
	r.rl_remaining = 0;
	r.rl_interval_ms = 10000;
	r.rl_daily_remaining = 5000;
	hs_rate_note_call(t0);
	hs_rate_note_response(&r, t0 + MS(50));
	CHECK(hs_rate_window_remaining() == 0);
	CHECK(hs_rate_daily_remaining() == 5000);
	CHECK(hs_rate_delay_ms(t0 + MS(50)) == 10000);
	CHECK(hs_rate_delay_ms(t0 + MS(10050)) == 0);
	/* an answer without headers does not erase what is known */
	r = no_headers();
	hs_rate_note_response(&r, t0 + MS(60));
	CHECK(hs_rate_window_remaining() == 0);
	/* a later answer with room lifts it */
	r.rl_remaining = 42;
	hs_rate_note_response(&r, t0 + MS(70));
	CHECK(hs_rate_delay_ms(t0 + MS(70)) == 0);
	CHECK(hs_rate_window_remaining() == 42);

	/* our own 100 calls fill the server's window: it frees when ours leave */
	t0 += MS(60000);
	for (i = 0; i < 100; i++)
		hs_rate_note_call(t0 + MS(i * 10));
	r = no_headers();
	r.rl_max = 100;
	r.rl_remaining = 0;
	r.rl_interval_ms = 10000;
	hs_rate_note_response(&r, t0 + MS(1000));
	/* own window says t0+10000; server guess t0+10000+margin(250) */
	CHECK(hs_rate_delay_ms(t0 + MS(1000)) == 9250);
	r.rl_remaining = 10;
	hs_rate_note_response(&r, t0 + MS(1000));

	/* 429 with Retry-After wins */
	t0 += MS(60000);
	r = no_headers();
	r.retry_after_ms = 1500;
	CHECK(hs_rate_note_429(&r, "TEN_SECONDLY_ROLLING", t0) == t0 + MS(1500));
	CHECK(hs_rate_delay_ms(t0) == 1500);
	/* a shorter later block does not shorten the earlier one */
	r.retry_after_ms = 100;
	CHECK(hs_rate_note_429(&r, NULL, t0) == t0 + MS(1500));

	/* policies without Retry-After */
	t0 += MS(60000);
	r = no_headers();
	CHECK(hs_rate_note_429(&r, "SECONDLY", t0) == t0 + MS(1000));
	t0 += MS(60000);
	r.rl_interval_ms = 10000;
	CHECK(hs_rate_note_429(&r, "TEN_SECONDLY_ROLLING", t0) == t0 + MS(10000));
	t0 += MS(60000);
	CHECK(hs_rate_note_429(&r, "WHATEVER", t0) == t0 + MS(10000));
	t0 += MS(60000);
	r = no_headers();
	CHECK(hs_rate_note_429(&r, NULL, t0) == t0 + MS(10000));

	/* daily: until the next midnight UTC, lifted by remaining > 0 */
	t0 += MS(60000);
	{
		TimestampTz midnight = (t0 / DAY + 1) * DAY;

		r = no_headers();
		CHECK(hs_rate_note_429(&r, "DAILY", t0) == midnight);
		CHECK(hs_rate_delay_ms(t0) == (midnight - t0) / 1000);
		r.rl_daily_remaining = 1000;
		hs_rate_note_response(&r, t0 + MS(10));
		CHECK(hs_rate_delay_ms(t0 + MS(10)) == 0);
		r.rl_daily_remaining = 0;
		hs_rate_note_response(&r, t0 + MS(20));
		CHECK(hs_rate_delay_ms(t0 + MS(20)) == (midnight - t0 - MS(20)) / 1000);
		CHECK(hs_rate_daily_remaining() == 0);
		CHECK(hs_rate_delay_ms(midnight) == 0);
		/* exactly at midnight: the next one */
		hs_rate_note_response(&r, midnight);
		CHECK(hs_rate_delay_ms(midnight) == 86400 * 1000);
		r.rl_daily_remaining = 7;
		hs_rate_note_response(&r, midnight);
	}

	/* secondly remaining 0: one second */
	t0 += DAY * 2;
	r = no_headers();
	r.rl_secondly_remaining = 0;
	hs_rate_note_response(&r, t0);
	CHECK(hs_rate_delay_ms(t0 + MS(400)) == 600);
	r.rl_secondly_remaining = 3;
	hs_rate_note_response(&r, t0 + MS(500));
	CHECK(hs_rate_delay_ms(t0 + MS(500)) == 0);

	/*
	 * searches: four a second, whoever makes them; a search waits for the
	 * place the ones before it took, and a clock that jumped back is no
	 * reason to wait for hours
	 */
	CHECK(hs_rate_search_slot(t0) == 0);
	CHECK(hs_rate_search_slot(t0) == 260);
	CHECK(hs_rate_search_slot(t0 + MS(10)) == 510);
	CHECK(hs_rate_search_slot(t0 + MS(2000)) == 0);
	CHECK(hs_rate_search_slot(t0 + MS(2100)) == 160);
	CHECK(hs_rate_search_slot(t0 - MS(60000)) == 0);
	CHECK(hs_rate_search_slot(t0 - MS(60000)) == 260);

	/* absurd Retry-After is clamped */
	r = no_headers();
	r.retry_after_ms = LONG_MAX;
	hs_rate_note_429(&r, NULL, t0);
	CHECK(hs_rate_delay_ms(t0) == 25L * 3600 * 1000);

	if (failures)
	{
		fprintf(stderr, "test_ratelimit: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_ratelimit: ok\n");
	return 0;
}

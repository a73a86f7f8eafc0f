/*-------------------------------------------------------------------------
 *
 * test_http.c
 *	  Unit test of hubspot/http.c against tests/unit/http_server.py, with
 *	  the backend stubbed by pgstubs.c.  Usage: test_http PORT
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

#include "miscadmin.h"

#include "hubspot.h"

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

static double
now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec * 1000.0 + tv.tv_usec / 1000.0;
}

static void
on_alarm(int sig)
{
	ProcDiePending = true;
}

int
main(int argc, char **argv)
{
	HsHttpConfig cfg;
	HsResponse	r;
	char		base[128];
	char		port1[32] = "";
	char	   *p;

	if (argc < 2)
		return 2;
	snprintf(base, sizeof(base), "http://127.0.0.1:%s/", argv[1]);
	cfg.base_url = base;
	cfg.token = "  secret-token-123\n";
	cfg.ca_file = NULL;
	cfg.connect_timeout_ms = 2000;
	cfg.timeout_ms = 20000;
	cfg.user_agent = "erpcrm-test/1.0";
	hs_http_init();
	hs_http_configure(&cfg);

	/* POST with body, headers, rate-limit headers */
	hs_http_request("POST", "/echo", "{\"a\":1}", &r);
	printf("POST: %ld %s\n", r.status, r.body);
	CHECK(r.status == 200 && r.transport_error == 0);
	CHECK(strstr(r.body, "\"method\": \"POST\"") != NULL);
	CHECK(strstr(r.body, "\"body\": \"{\\\"a\\\":1}\"") != NULL);
	CHECK(strstr(r.body, "\"authorization\": \"Bearer secret-token-123\"") != NULL);
	CHECK(strstr(r.body, "\"content-type\": \"application/json\"") != NULL);
	CHECK(strstr(r.body, "\"user-agent\": \"erpcrm-test/1.0\"") != NULL);
	CHECK(r.rl_remaining == 99 && r.rl_max == 100 && r.rl_interval_ms == 10000 &&
		  r.rl_daily == 250000 && r.rl_daily_remaining == 249999 &&
		  r.rl_secondly == -1 && r.retry_after_ms == -1);
	CHECK(strlen(r.correlation_id) == 63);
	CHECK(r.body_len == strlen(r.body));
	p = strstr(r.body, "\"port\": ");
	if (p)
		strlcpy(port1, p, sizeof(port1));

	/* GET after POST: no body, no Content-Type, same connection */
	hs_http_request("GET", "/echo", NULL, &r);
	printf("GET: %ld %s\n", r.status, r.body);
	CHECK(r.status == 200 && strstr(r.body, "\"method\": \"GET\"") != NULL);
	CHECK(strstr(r.body, "\"body\": \"\"") != NULL);
	CHECK(strstr(r.body, "content-type") == NULL);
	CHECK(strstr(r.body, "content-length") == NULL);
	p = strstr(r.body, "\"port\": ");
	CHECK(p != NULL && strncmp(p, port1, strlen(port1)) == 0);	/* keep-alive */

	hs_http_request("PATCH", "/echo", "{}", &r);
	CHECK(r.status == 200 && strstr(r.body, "\"method\": \"PATCH\"") != NULL);
	hs_http_request("DELETE", "/echo", NULL, &r);
	CHECK(r.status == 200 && strstr(r.body, "\"method\": \"DELETE\"") != NULL &&
		  strstr(r.body, "\"body\": \"\"") != NULL);
	hs_http_request("PUT", "/echo", "[1]", &r);
	CHECK(r.status == 200 && strstr(r.body, "\"method\": \"PUT\"") != NULL);
	hs_http_request("POST", "/echo", NULL, &r);
	CHECK(r.status == 200 && strstr(r.body, "\"method\": \"POST\"") != NULL);

	/*
	 * In halves, with work in between: the request goes on without a wait
	 * (progress), the answer is the same as in one call, on the same
	 * connection.
	 */
	{
		char		body[] = "{\"half\":2}";
		int			steps = 0;

		CHECK(hs_http_progress());	/* nothing on the wire */
		CHECK(hs_http_start("POST", "/echo", body, &r));
		while (!hs_http_progress() && steps < 2000)
		{
			usleep(1000);		/* the caller's own work */
			steps++;
		}
		CHECK(steps < 2000);
		hs_http_finish();
		printf("halves: %ld after %d steps\n", r.status, steps);
		CHECK(r.status == 200 && r.transport_error == 0);
		CHECK(strstr(r.body, "\"body\": \"{\\\"half\\\":2}\"") != NULL);
		p = strstr(r.body, "\"port\": ");
		CHECK(p != NULL && strncmp(p, port1, strlen(port1)) == 0);
		CHECK(r.rl_remaining == 99);
	}

	/* a request abandoned on the wire: the next one is not disturbed */
	{
		double		t0 = now_ms();

		CHECK(hs_http_start("GET", "/slow", NULL, &r));
		CHECK(!hs_http_progress());
		hs_http_abandon();
		CHECK(hs_http_progress());
		hs_http_request("GET", "/echo", NULL, &r);
		printf("after abandon: %ld in %.0f ms\n", r.status, now_ms() - t0);
		CHECK(r.status == 200 && r.transport_error == 0 && now_ms() - t0 < 4000);
	}

	/* 429 with Retry-After; headers of the previous call do not leak */
	hs_http_request("POST", "/429", "{}", &r);
	CHECK(r.status == 429 && r.retry_after_ms == 2500 && r.rl_remaining == -1 &&
		  r.correlation_id[0] == '\0');
	hs_http_request("GET", "/429date", NULL, &r);
	CHECK(r.status == 429 && r.retry_after_ms == 0);

	/* no redirects followed */
	hs_http_request("GET", "/redirect", NULL, &r);
	CHECK(r.status == 302 && r.transport_error == 0);

	hs_http_request("GET", "/missing", NULL, &r);
	CHECK(r.status == 404 && strstr(r.body, "OBJECT_NOT_FOUND") != NULL);

	/* too large */
	hs_http_request("GET", "/big", NULL, &r);
	printf("big: %ld %d %s\n", r.status, r.transport_error, r.transport_message);
	CHECK(r.transport_error != 0 && strcmp(r.transport_message, "answer too large") == 0 &&
		  r.body_len == 0 && r.body[0] == '\0');

	/* truncated */
	hs_http_request("GET", "/trunc", NULL, &r);
	printf("trunc: %ld %d %s\n", r.status, r.transport_error, r.transport_message);
	CHECK(r.transport_error != 0 && r.body_len == 0);

	/* works again after failures */
	hs_http_request("GET", "/echo", NULL, &r);
	CHECK(r.status == 200 && r.transport_error == 0);

	/* the User-Agent is the caller's: none when it gives none */
	cfg.user_agent = NULL;
	hs_http_configure(&cfg);
	hs_http_request("GET", "/echo", NULL, &r);
	CHECK(r.status == 200 && strstr(r.body, "user-agent") == NULL);
	cfg.user_agent = "erpcrm-test/1.0";
	hs_http_configure(&cfg);

	/* a stop request during a slow call ends it quickly */
	{
		struct itimerval it = {{0, 0}, {0, 300000}};
		double		t0;
		double		took;

		signal(SIGALRM, on_alarm);
		setitimer(ITIMER_REAL, &it, NULL);
		t0 = now_ms();
		hs_http_request("GET", "/slow", NULL, &r);
		took = now_ms() - t0;
		printf("slow: aborted=%d took %.0f ms: %d %s\n", r.aborted, took,
			   r.transport_error, r.transport_message);
		CHECK(r.aborted && r.transport_error != 0 && took < 600);
		ProcDiePending = false;
	}

	/* connection refused */
	cfg.base_url = "http://127.0.0.1:1";
	cfg.token = "other";
	hs_http_configure(&cfg);
	hs_http_request("GET", "/echo", NULL, &r);
	printf("refused: %d %s\n", r.transport_error, r.transport_message);
	CHECK(r.transport_error != 0 && r.status == 0 && strstr(r.transport_message, "other") == NULL);

	/* other protocols refused */
	cfg.base_url = "file:///etc/passwd";
	hs_http_configure(&cfg);
	hs_http_request("GET", "", NULL, &r);
	printf("file: %d %s\n", r.transport_error, r.transport_message);
	CHECK(r.transport_error != 0 && r.body_len == 0);

	hs_http_cleanup();
	hs_http_cleanup();

	if (failures)
	{
		fprintf(stderr, "test_http: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_http: ok\n");
	return 0;
}

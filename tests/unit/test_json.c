/*-------------------------------------------------------------------------
 *
 * test_json.c
 *	  Unit test of hubspot/json.c, with the backend stubbed by pgstubs.c.
 *	  "test_json fuzz N" also throws N mutated answers at the parsers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

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

#define STREQ(a, b) ((a) != NULL && strcmp((a), (b)) == 0)

static bool
batch(const char *s, const char *key, HsBatchResult *out, const char **why)
{
	return hs_parse_batch(s, strlen(s), key, out, why);
}

static void
test_bodies(void)
{
	HsJsonBody *b;
	char	   *s;
	const char *names[] = {"name", "note", "empty", "name"};
	const char *values[] = {"A \"quoted\" \\ name", "line1\nline2\t\x01 \xc5\xbc\xf0\x9f\x98\x80", NULL, "dup"};

	b = hs_body_new();
	CHECK(hs_body_count(b) == 0);
	hs_body_add_upsert(b, "erp_id", "K-1", 4, names, values);
	CHECK(hs_body_count(b) == 1);
	s = hs_body_finish(b);
	printf("%s\n", s);
	CHECK(STREQ(s, "{\"inputs\":[{\"idProperty\":\"erp_id\",\"id\":\"K-1\",\"properties\":"
				"{\"name\":\"A \\\"quoted\\\" \\\\ name\",\"note\":\"line1\\nline2\\t\\u0001 \xc5\xbc\xf0\x9f\x98\x80\","
				"\"empty\":\"\",\"erp_id\":\"K-1\"}}]}"));

	/* id property already among the names: not repeated */
	{
		const char *n2[] = {"erp_id", "x"};
		const char *v2[] = {"K-2", "y"};

		b = hs_body_new();
		hs_body_add_upsert(b, "erp_id", "K-2", 2, n2, v2);
		hs_body_add_update(b, "123", 2, n2, v2);
		hs_body_add_archive(b, "456");
		s = hs_body_finish(b);
		CHECK(STREQ(s, "{\"inputs\":[{\"idProperty\":\"erp_id\",\"id\":\"K-2\",\"properties\":{\"erp_id\":\"K-2\",\"x\":\"y\"}},"
					"{\"id\":\"123\",\"properties\":{\"erp_id\":\"K-2\",\"x\":\"y\"}},{\"id\":\"456\"}]}"));
	}

	b = hs_body_new();
	hs_body_add_association(b, "1", "2", "HUBSPOT_DEFINED", 279);
	hs_body_add_association(b, "3", "4", NULL, 0);
	s = hs_body_finish(b);
	CHECK(STREQ(s, "{\"inputs\":[{\"from\":{\"id\":\"1\"},\"to\":{\"id\":\"2\"},\"types\":"
				"[{\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":279}]},"
				"{\"from\":{\"id\":\"3\"},\"to\":{\"id\":\"4\"}}]}"));

	b = hs_body_new();
	s = hs_body_finish(b);
	CHECK(STREQ(s, "{\"inputs\":[]}"));
}

static void
test_batch(void)
{
	HsBatchResult r;
	const char *why;

	CHECK(batch("{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"101\",\"new\":true,\"properties\":{\"erp_id\":\"K-1\"}},"
				"{\"id\":202,\"properties\":{\"erp_id\":\"K-2\",\"x\":null}}],\"numErrors\":1,"
				"\"errors\":[{\"status\":\"error\",\"category\":\"VALIDATION_ERROR\",\"message\":\"bad\","
				"\"context\":{\"ids\":[\"K-3\",\"K-4\"]}},{\"status\":\"error\",\"category\":\"OBJECT_NOT_FOUND\","
				"\"context\":{\"id\":[\"9\"]}},{\"status\":409,\"category\":\"X\"},"
				"{\"status\":\"error\",\"category\":\"Y\",\"errors\":[{\"status\":\"503\"}],\"context\":{\"id\":7}}]}",
				"erp_id", &r, &why));
	CHECK(r.nresults == 2 && r.nerrors == 4);
	if (r.nresults == 2 && r.nerrors == 4)
	{
		CHECK(STREQ(r.results[0].key, "K-1") && STREQ(r.results[0].hubspot_id, "101") && r.results[0].is_new);
		CHECK(STREQ(r.results[1].key, "K-2") && STREQ(r.results[1].hubspot_id, "202") && !r.results[1].is_new);
		CHECK(r.errors[0].status == 400 && STREQ(r.errors[0].category, "VALIDATION_ERROR") &&
			  STREQ(r.errors[0].message, "bad") && r.errors[0].nids == 2 &&
			  STREQ(r.errors[0].ids[1], "K-4"));
		CHECK(r.errors[1].status == 404 && STREQ(r.errors[1].message, "") &&
			  r.errors[1].nids == 1 && STREQ(r.errors[1].ids[0], "9"));
		CHECK(r.errors[2].status == 409 && r.errors[2].nids == 0);
		CHECK(r.errors[3].status == 503 && r.errors[3].nids == 1 && STREQ(r.errors[3].ids[0], "7"));
	}

	/* no key property: key = id */
	CHECK(batch("{\"results\":[{\"id\":\"5\"}]}", NULL, &r, &why));
	CHECK(r.nresults == 1 && STREQ(r.results[0].key, "5"));

	/* association answers */
	CHECK(batch("{\"results\":[{\"from\":{\"id\":\"1\"},\"to\":{\"id\":\"2\"}},"
				"{\"fromObjectId\":3,\"toObjectId\":4,\"labels\":[]}]}", NULL, &r, &why));
	CHECK(r.nresults == 2 && STREQ(r.results[0].key, "1:2") && STREQ(r.results[1].key, "3:4"));

	/* only errors */
	CHECK(batch("{\"errors\":[]}", "erp_id", &r, &why));
	CHECK(r.nresults == 0 && r.nerrors == 0);
	CHECK(batch("{\"results\":[]}", "erp_id", &r, &why));

	/* refusals */
	CHECK(!batch("", NULL, &r, &why));
	CHECK(!batch("nope", NULL, &r, &why) && STREQ(why, "answer is not JSON"));
	CHECK(!batch("[]", NULL, &r, &why));
	CHECK(!batch("{}", NULL, &r, &why));
	CHECK(!batch("{\"results\":{}}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[1]}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[{\"id\":\"1\",\"new\":\"yes\"}]}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[{\"id\":1.5}]}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[{\"id\":\"1\"},{\"id\":\"2\"},{\"id\":\"3\",\"properties\":{}}]}", "erp_id", &r, &why));
	CHECK(STREQ(why, "result 1 has no \"erp_id\" property"));
	CHECK(!batch("{\"results\":[{\"id\":\"1\",\"properties\":{\"erp_id\":\"a\"}},{\"properties\":{\"erp_id\":\"b\"}}]}", "erp_id", &r, &why));
	CHECK(STREQ(why, "result 2 has no \"id\""));
	CHECK(r.nresults == 0 && r.results == NULL);
	CHECK(!batch("{\"results\":[],\"errors\":{}}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[],\"errors\":[{\"message\":5}]}", NULL, &r, &why));
	CHECK(!batch("{\"results\":[],\"errors\":[{\"context\":{\"ids\":[{}]}}]}", NULL, &r, &why));
	/*
	 * Bytes after a complete answer are ignored (cJSON stops at the end of
	 * the value): the answer read is the one HubSpot sent, whole.
	 */
	CHECK(batch("{\"results\":[{\"id\":\"7\"}]} trailing", NULL, &r, &why));
	CHECK(r.nresults == 1 && STREQ(r.results[0].hubspot_id, "7"));

	/* invalid UTF-8 is replaced */
	CHECK(batch("{\"results\":[{\"id\":\"1\xff\xc0\x80\xe2\x82\"}]}", NULL, &r, &why));
	CHECK(r.nresults == 1 && STREQ(r.results[0].hubspot_id, "1?????"));
}

static void
test_error(void)
{
	HsError		e;
	const char *s;

	s = "{\"status\":\"error\",\"message\":\"You have reached your ten_secondly_rolling limit.\","
		"\"errorType\":\"RATE_LIMIT\",\"correlationId\":\"abc\",\"policyName\":\"TEN_SECONDLY_ROLLING\"}";
	CHECK(hs_parse_error(s, strlen(s), &e));
	CHECK(STREQ(e.status, "error") && STREQ(e.category, "RATE_LIMIT") &&
		  STREQ(e.correlation_id, "abc") && STREQ(e.policy_name, "TEN_SECONDLY_ROLLING") &&
		  STREQ(e.sub_category, "") && e.nids == 0);

	s = "{\"status\":\"error\",\"category\":\"VALIDATION_ERROR\",\"subCategory\":5,"
		"\"errors\":[{\"context\":{\"ids\":[\"1\"]}},{\"context\":\"{x=y}\"},{\"context\":{\"id\":[\"2\",3]}}]}";
	CHECK(hs_parse_error(s, strlen(s), &e));
	CHECK(STREQ(e.category, "VALIDATION_ERROR") && STREQ(e.sub_category, "") &&
		  e.nids == 3 && STREQ(e.ids[2], "3"));

	s = "{\"context\":{\"ids\":[\"K\"]},\"errors\":[{\"context\":{\"ids\":[\"Z\"]}}]}";
	CHECK(hs_parse_error(s, strlen(s), &e) && e.nids == 1 && STREQ(e.ids[0], "K"));

	s = "<html>502</html>";
	CHECK(!hs_parse_error(s, strlen(s), &e));
	CHECK(STREQ(e.status, "") && STREQ(e.message, "") && STREQ(e.category, ""));
	CHECK(!hs_parse_error("[1]", 3, &e));
	CHECK(!hs_parse_error(NULL, 0, &e));
}

/* Throw mutated answers at both parsers; only crashes (ASan) matter. */
static void
fuzz(long iterations)
{
	static const char *seeds[] = {
		"{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"101\",\"new\":true,\"properties\":{\"erp_id\":\"K-1\"}}],"
		"\"errors\":[{\"status\":\"error\",\"category\":\"VALIDATION_ERROR\",\"message\":\"bad\","
		"\"context\":{\"ids\":[\"K-3\"]},\"errors\":[{\"status\":\"400\"}]}]}",
		"{\"results\":[{\"from\":{\"id\":\"1\"},\"to\":{\"id\":\"2\"}},{\"fromObjectId\":3,\"toObjectId\":4}]}",
		"{\"status\":\"error\",\"message\":\"m\",\"errorType\":\"RATE_LIMIT\",\"policyName\":\"DAILY\","
		"\"context\":{\"id\":[1,2]},\"errors\":[{\"context\":{\"ids\":[\"x\"]}}]}",
	};
	static const char alphabet[] = "{}[]\":,0123456789.-eE truefalsnul\\u\xff\x80idnewresultserrorscontextidsproperties";
	char		buf[2048];
	long		it;

	srandom(12345);
	for (it = 0; it < iterations; it++)
	{
		const char *seed = seeds[random() % lengthof(seeds)];
		size_t		len = strlen(seed);
		int			m = 1 + random() % 8;
		int			k;
		HsBatchResult r;
		HsError		e;
		const char *why;

		memcpy(buf, seed, len);
		for (k = 0; k < m; k++)
		{
			size_t		pos = random() % (len + 1);
			int			op = random() % 3;

			if (op == 0 && len > 0 && pos < len)
				buf[pos] = alphabet[random() % (sizeof(alphabet) - 1)];
			else if (op == 1 && len > 0 && pos < len)
			{
				memmove(buf + pos, buf + pos + 1, len - pos - 1);
				len--;
			}
			else if (len + 1 < sizeof(buf))
			{
				memmove(buf + pos + 1, buf + pos, len - pos);
				buf[pos] = alphabet[random() % (sizeof(alphabet) - 1)];
				len++;
			}
		}
		/* no NUL terminator on purpose: the length must be honoured */
		{
			char	   *exact = malloc(len ? len : 1);

			memcpy(exact, buf, len);
			(void) hs_parse_batch(exact, len, (random() % 2) ? "erp_id" : NULL, &r, &why);
			(void) hs_parse_error(exact, len, &e);
			free(exact);
		}
	}
	printf("fuzz: %ld answers\n", iterations);
}

int
main(int argc, char **argv)
{
	test_bodies();
	test_batch();
	test_error();
	if (argc > 2 && strcmp(argv[1], "fuzz") == 0)
		fuzz(atol(argv[2]));
	if (failures)
	{
		fprintf(stderr, "test_json: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_json: ok\n");
	return 0;
}

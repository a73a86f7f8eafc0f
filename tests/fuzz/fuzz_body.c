/*-------------------------------------------------------------------------
 *
 * fuzz_body.c
 *	  libFuzzer harness for the request bodies of hubspot/json.c: batch
 *	  upsert, update and archive inputs, v4 associations and search
 *	  bodies, built from arbitrary strings and read back.
 *
 * Input: strings separated by NUL bytes: the id property, the id, then
 * property name / value pairs; a string that is the single byte 0xFF
 * stands for NULL.  Checked for every input:
 *	  - the serialised body is strict RFC 8259 JSON (checked by a parser
 *		written here, not by cJSON, which printed it), and valid UTF-8
 *		whenever every input string is;
 *	  - parsed back, it carries every string byte for byte where the
 *		contract of hubspot.h puts it: idProperty, id, each property (the
 *		first of repeated names wins, NULL values become "", the id property
 *		is added when the names lack it), association ids and types, search
 *		values; nothing more;
 *	  - with the k-th cJSON allocation failing, building either succeeds or
 *		raises an ERROR (caught here as PG_TRY would), never crashes.
 *
 * erpcrm_property_value() (worker/values.c) is not fuzzed here: it needs
 * the type output functions and the catalogue of a running backend.  The
 * TAP suites check its output for every type class instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "hubspot.h"
#include "fuzzcheck.h"

#define MAX_FIELDS 402

typedef struct Fields
{
	int			n;
	const char *s[MAX_FIELDS];
	bool		all_utf8;
} Fields;

/* ----------------------------------------------------------------
 * A strict JSON checker (RFC 8259), independent of cJSON
 * ----------------------------------------------------------------
 */
typedef struct Strict
{
	const unsigned char *p;
	const unsigned char *end;
	bool		need_utf8;
	int			depth;
} Strict;

static bool strict_value(Strict *st);

static void
strict_ws(Strict *st)
{
	while (st->p < st->end &&
		   (*st->p == ' ' || *st->p == '\t' || *st->p == '\n' || *st->p == '\r'))
		st->p++;
}

static bool
strict_string(Strict *st)
{
	const unsigned char *start;

	if (st->p >= st->end || *st->p != '"')
		return false;
	st->p++;
	start = st->p;
	while (st->p < st->end && *st->p != '"')
	{
		if (*st->p < 0x20)
			return false;		/* raw control characters are not JSON */
		if (*st->p == '\\')
		{
			st->p++;
			if (st->p >= st->end)
				return false;
			if (*st->p == 'u')
			{
				for (int i = 1; i <= 4; i++)
				{
					if (st->p + i >= st->end || !isxdigit(st->p[i]))
						return false;
				}
				st->p += 4;
			}
			else if (strchr("\"\\/bfnrt", *st->p) == NULL || *st->p == '\0')
				return false;
		}
		st->p++;
	}
	if (st->p >= st->end)
		return false;
	if (st->need_utf8 &&
		!fuzz_utf8_valid((const char *) start, st->p - start))
		return false;
	st->p++;
	return true;
}

static bool
strict_digits(Strict *st)
{
	const unsigned char *start = st->p;

	while (st->p < st->end && isdigit(*st->p))
		st->p++;
	return st->p > start;
}

static bool
strict_number(Strict *st)
{
	if (st->p < st->end && *st->p == '-')
		st->p++;
	if (st->p < st->end && *st->p == '0')
		st->p++;
	else if (!strict_digits(st))
		return false;
	if (st->p < st->end && *st->p == '.')
	{
		st->p++;
		if (!strict_digits(st))
			return false;
	}
	if (st->p < st->end && (*st->p == 'e' || *st->p == 'E'))
	{
		st->p++;
		if (st->p < st->end && (*st->p == '+' || *st->p == '-'))
			st->p++;
		if (!strict_digits(st))
			return false;
	}
	return true;
}

static bool
strict_word(Strict *st, const char *w)
{
	size_t		n = strlen(w);

	if ((size_t) (st->end - st->p) < n || memcmp(st->p, w, n) != 0)
		return false;
	st->p += n;
	return true;
}

static bool
strict_container(Strict *st, char close, bool object)
{
	st->p++;
	strict_ws(st);
	if (st->p < st->end && *st->p == close)
	{
		st->p++;
		return true;
	}
	for (;;)
	{
		if (object)
		{
			if (!strict_string(st))
				return false;
			strict_ws(st);
			if (st->p >= st->end || *st->p != ':')
				return false;
			st->p++;
		}
		if (!strict_value(st))
			return false;
		strict_ws(st);
		if (st->p < st->end && *st->p == ',')
		{
			st->p++;
			strict_ws(st);
			continue;
		}
		if (st->p < st->end && *st->p == close)
		{
			st->p++;
			return true;
		}
		return false;
	}
}

static bool
strict_value(Strict *st)
{
	bool		ok;

	strict_ws(st);
	if (st->p >= st->end || ++st->depth > 64)
		return false;
	switch (*st->p)
	{
		case '{':
			ok = strict_container(st, '}', true);
			break;
		case '[':
			ok = strict_container(st, ']', false);
			break;
		case '"':
			ok = strict_string(st);
			break;
		case 't':
			ok = strict_word(st, "true");
			break;
		case 'f':
			ok = strict_word(st, "false");
			break;
		case 'n':
			ok = strict_word(st, "null");
			break;
		default:
			ok = strict_number(st);
			break;
	}
	st->depth--;
	return ok;
}

static bool
strict_json(const char *text, bool need_utf8)
{
	Strict		st;

	st.p = (const unsigned char *) text;
	st.end = st.p + strlen(text);
	st.need_utf8 = need_utf8;
	st.depth = 0;
	if (!strict_value(&st))
		return false;
	strict_ws(&st);
	return st.p == st.end;
}

/* ----------------------------------------------------------------
 * Reading the body back
 * ----------------------------------------------------------------
 */

/* obj[name] is a string equal to want (NULL meaning "") */
static bool
has_string(const cJSON *obj, const char *name, const char *want)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

	return cJSON_IsString(v) && v->valuestring != NULL &&
		strcmp(v->valuestring, want ? want : "") == 0;
}

static const cJSON *
nth(const cJSON *array, int i)
{
	FUZZ_ASSERT(cJSON_IsArray(array));
	return cJSON_GetArrayItem(array, i);
}

/*
 * The "properties" object of an input holds exactly the first value of
 * each non-NULL name, and extra_name = extra_value when names lack it.
 */
static void
check_properties(const cJSON *input, const Fields *f, const char *extra_name,
				 const char *extra_value)
{
	const cJSON *props = cJSON_GetObjectItemCaseSensitive(input, "properties");
	int			distinct = 0;
	bool		have_extra = false;

	FUZZ_ASSERT(cJSON_IsObject(props));
	for (int i = 2; i + 1 < f->n; i += 2)
	{
		const char *name = f->s[i];
		bool		first = true;

		if (name == NULL)
			continue;
		for (int k = 2; k < i; k += 2)
		{
			if (f->s[k] != NULL && strcmp(f->s[k], name) == 0)
				first = false;
		}
		if (extra_name != NULL && strcmp(name, extra_name) == 0)
			have_extra = true;
		if (!first)
			continue;
		distinct++;
		FUZZ_ASSERT(has_string(props, name, f->s[i + 1]));
	}
	if (extra_name != NULL && !have_extra)
	{
		distinct++;
		FUZZ_ASSERT(has_string(props, extra_name, extra_value));
	}
	FUZZ_ASSERT(cJSON_GetArraySize(props) == distinct);
}

/* ----------------------------------------------------------------
 * Building
 * ----------------------------------------------------------------
 */
typedef struct Built
{
	char	   *batch;			/* upsert + update + archive */
	char	   *association;
	char	   *search;
} Built;

static void
build(const Fields *f, Built *out)
{
	const char *names[MAX_FIELDS / 2];
	const char *values[MAX_FIELDS / 2];
	int			nprops = 0;
	HsJsonBody *body;

	for (int i = 2; i + 1 < f->n; i += 2)
	{
		names[nprops] = f->s[i];
		values[nprops] = f->s[i + 1];
		nprops++;
	}

	body = hs_body_new();
	hs_body_add_upsert(body, f->s[0], f->s[1], nprops, names, values);
	hs_body_add_update(body, f->s[1], nprops, names, values);
	hs_body_add_archive(body, f->s[1]);
	FUZZ_ASSERT(hs_body_count(body) == 3);
	out->batch = hs_body_finish(body);

	body = hs_body_new();
	hs_body_add_association(body, f->s[0], f->s[1],
							nprops > 0 ? names[0] : NULL, nprops);
	out->association = hs_body_finish(body);

	/* the names as the values searched for, the id as "without" */
	out->search = hs_search_body(f->s[0] ? f->s[0] : "", nprops, names,
								 f->s[1], 100);
}

static void
check(const Fields *f, const Built *b)
{
	cJSON	   *root;
	const cJSON *inputs;
	const cJSON *in;
	int			nprops = f->n >= 2 ? (f->n - 2) / 2 : 0;

	FUZZ_ASSERT(strict_json(b->batch, f->all_utf8));
	FUZZ_ASSERT(strict_json(b->association, f->all_utf8));
	FUZZ_ASSERT(strict_json(b->search, f->all_utf8));

	/* upsert, update, archive */
	root = cJSON_Parse(b->batch);
	FUZZ_ASSERT(cJSON_IsObject(root) && cJSON_GetArraySize(root) == 1);
	inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
	FUZZ_ASSERT(cJSON_IsArray(inputs) && cJSON_GetArraySize(inputs) == 3);
	in = nth(inputs, 0);
	FUZZ_ASSERT(cJSON_GetArraySize(in) == 3);
	FUZZ_ASSERT(has_string(in, "idProperty", f->s[0]));
	FUZZ_ASSERT(has_string(in, "id", f->s[1]));
	check_properties(in, f, f->s[0], f->s[1] ? f->s[1] : "");
	in = nth(inputs, 1);
	FUZZ_ASSERT(cJSON_GetArraySize(in) == 2);
	FUZZ_ASSERT(has_string(in, "id", f->s[1]));
	check_properties(in, f, NULL, NULL);
	in = nth(inputs, 2);
	FUZZ_ASSERT(cJSON_GetArraySize(in) == 1);
	FUZZ_ASSERT(has_string(in, "id", f->s[1]));
	cJSON_Delete(root);

	/* association */
	root = cJSON_Parse(b->association);
	inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
	FUZZ_ASSERT(cJSON_IsArray(inputs) && cJSON_GetArraySize(inputs) == 1);
	in = nth(inputs, 0);
	FUZZ_ASSERT(has_string(cJSON_GetObjectItemCaseSensitive(in, "from"), "id", f->s[0]));
	FUZZ_ASSERT(has_string(cJSON_GetObjectItemCaseSensitive(in, "to"), "id", f->s[1]));
	if (nprops > 0)
	{
		const cJSON *type = nth(cJSON_GetObjectItemCaseSensitive(in, "types"), 0);
		const cJSON *tid = cJSON_GetObjectItemCaseSensitive(type, "associationTypeId");

		FUZZ_ASSERT(has_string(type, "associationCategory",
							   f->s[2] ? f->s[2] : "HUBSPOT_DEFINED"));
		FUZZ_ASSERT(cJSON_IsNumber(tid) && tid->valuedouble == nprops);
	}
	else
		FUZZ_ASSERT(cJSON_GetArraySize(in) == 2);
	cJSON_Delete(root);

	/* search */
	{
		const cJSON *filters;
		const cJSON *vals;

		root = cJSON_Parse(b->search);
		filters = cJSON_GetObjectItemCaseSensitive(nth(cJSON_GetObjectItemCaseSensitive(root, "filterGroups"), 0),
												   "filters");
		in = nth(filters, 0);
		FUZZ_ASSERT(has_string(in, "propertyName", f->s[0]));
		FUZZ_ASSERT(has_string(in, "operator", "IN"));
		vals = cJSON_GetObjectItemCaseSensitive(in, "values");
		FUZZ_ASSERT(cJSON_IsArray(vals) && cJSON_GetArraySize(vals) == nprops);
		for (int i = 0; i < nprops; i++)
		{
			const cJSON *v = nth(vals, i);
			const char *want = f->s[2 + 2 * i];

			FUZZ_ASSERT(cJSON_IsString(v) && strcmp(v->valuestring, want ? want : "") == 0);
		}
		if (f->s[1] != NULL)
		{
			FUZZ_ASSERT(cJSON_GetArraySize(filters) == 2);
			FUZZ_ASSERT(has_string(nth(filters, 1), "propertyName", f->s[1]));
			FUZZ_ASSERT(has_string(nth(filters, 1), "operator", "NOT_HAS_PROPERTY"));
		}
		else
			FUZZ_ASSERT(cJSON_GetArraySize(filters) == 1);
		cJSON_Delete(root);
	}
}

static void
split(const uint8_t *data, size_t size, Fields *f)
{
	size_t		start = 0;

	f->n = 0;
	f->all_utf8 = true;
	for (size_t i = 0; i <= size && f->n < MAX_FIELDS; i++)
	{
		if (i < size && data[i] != '\0')
			continue;
		if (i - start == 1 && data[start] == 0xFF)
			f->s[f->n++] = NULL;
		else
		{
			char	   *s = palloc(i - start + 1);

			memcpy(s, data + start, i - start);
			s[i - start] = '\0';
			f->all_utf8 &= fuzz_utf8_valid(s, i - start);
			f->s[f->n++] = s;
		}
		start = i + 1;
	}
	/* an id property and an id, always */
	while (f->n < 2)
		f->s[f->n++] = NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Fields		f;
	Built		b;
	long		allocs;
	uint32		h = 2166136261u;
	sigjmp_buf	jmp;

	split(data, size, &f);
	build(&f, &b);
	allocs = stub_cjson_allocs;
	check(&f, &b);
	pfree(b.batch);
	pfree(b.association);
	pfree(b.search);
	FUZZ_ASSERT(stub_cjson_live() == 0);
	stub_reset();

	/* again, with the k-th cJSON allocation failing */
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 16777619u;
	split(data, size, &f);
	stub_fail_after = (long) (h % (uint32) Max(allocs, 1));
	if (sigsetjmp(jmp, 0) == 0)
	{
		stub_error_jmp = &jmp;
		build(&f, &b);
	}
	stub_reset();
	return 0;
}

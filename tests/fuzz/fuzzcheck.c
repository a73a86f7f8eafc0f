/*-------------------------------------------------------------------------
 *
 * fuzzcheck.c
 *	  The checks the libFuzzer harnesses share: well-formed UTF-8, and each
 *	  parser run twice, the second time with a cJSON allocation failing.
 *	  The backend stubs they link are tests/stubs/pgstubs.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fuzzcheck.h"

long		fuzz_allocs_mark = -1;

/* Written apart from json.c's utf8_pstrdup, so that it can check it. */
bool
fuzz_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned int c = p[i];
		unsigned int cp;
		size_t		need;
		unsigned int min;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0)
		{
			need = 1;
			cp = c & 0x1F;
			min = 0x80;
		}
		else if ((c & 0xF0) == 0xE0)
		{
			need = 2;
			cp = c & 0x0F;
			min = 0x800;
		}
		else if ((c & 0xF8) == 0xF0)
		{
			need = 3;
			cp = c & 0x07;
			min = 0x10000;
		}
		else
			return false;
		if (len - i <= need)
			return false;
		for (size_t k = 1; k <= need; k++)
		{
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += need + 1;
	}
	return true;
}

void
fuzz_run_parser(fuzz_parser_fn fn, const uint8_t *data, size_t size)
{
	long		allocs;
	uint32		h = 2166136261u;

	fuzz_allocs_mark = -1;
	fn((const char *) data, size, false);
	FUZZ_ASSERT(stub_cjson_live() == 0);
	allocs = fuzz_allocs_mark >= 0 ? fuzz_allocs_mark : stub_cjson_allocs;
	stub_reset();

	if (allocs == 0)
		return;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 16777619u;
	stub_fail_after = (long) (h % (uint32) allocs);
	fn((const char *) data, size, true);
	FUZZ_ASSERT(stub_cjson_live() == 0);
	stub_reset();
}

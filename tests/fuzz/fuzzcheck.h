/*-------------------------------------------------------------------------
 *
 * fuzzcheck.h
 *	  The checks the fuzz harnesses share (fuzzcheck.c), and the backend
 *	  stubs they run on (tests/stubs/pgstubs.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FUZZCHECK_H
#define ERPCRM_FUZZCHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "pgstubs.h"

/* set by a harness after the calls under test: their cJSON allocations */
extern long fuzz_allocs_mark;

/* Well-formed UTF-8 (no overlong forms, surrogates, or beyond U+10FFFF)? */
extern bool fuzz_utf8_valid(const char *s, size_t len);

/* A broken promise of the code under test: print and crash (a finding). */
#define FUZZ_ASSERT(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "%s:%d: fuzz check failed: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* A returned string: present and well-formed UTF-8, as json.c promises. */
#define FUZZ_STR_OK(s) ((s) != NULL && fuzz_utf8_valid((s), strlen(s)))

/*
 * Run a parser harness on one input twice: as is, then with the k-th cJSON
 * allocation failing (k derived from the input).  After each run no cJSON
 * allocation may be live.  The callback is told whether allocations fail,
 * in which case it must skip checks that need a successful parse.
 */
typedef void (*fuzz_parser_fn) (const char *body, size_t len, bool oom);
extern void fuzz_run_parser(fuzz_parser_fn fn, const uint8_t *data,
							size_t size);

#endif							/* ERPCRM_FUZZCHECK_H */

/*-------------------------------------------------------------------------
 *
 * pgstubs.h
 *	  The backend stubs of tests/stubs/pgstubs.c: tracked palloc, a
 *	  catchable ERROR, injected allocation failures.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_PGSTUBS_H
#define ERPCRM_PGSTUBS_H

#include <setjmp.h>

/* where an ERROR jumps (NULL: abort, an ERROR is a finding) */
extern sigjmp_buf *stub_error_jmp;

/* fail the n-th next cJSON allocation (-1: never) */
extern long stub_fail_after;

/* cJSON allocations made since the last stub_reset() */
extern long stub_cjson_allocs;

/* messages at or above this level are printed */
extern int	stub_log_level;

/* cJSON allocations still live: nonzero after a call = a tree not deleted */
extern long stub_cjson_live(void);

/* free everything allocated since the last reset, clear the settings */
extern void stub_reset(void);

#endif							/* ERPCRM_PGSTUBS_H */

/*-------------------------------------------------------------------------
 *
 * pgstubs.c
 *	  Just enough of the backend (palloc & co, ereport, the interrupt flags)
 *	  to run the HubSpot client (hubspot/http.c, json.c) outside a server:
 *	  for the unit tests (tests/unit) and the fuzz harnesses (tests/fuzz).
 *
 * Memory is tracked: every allocation is remembered in a pointer hash, so
 * that
 *	  - stub_reset() frees everything since the last reset, the way the
 *		worker resets its per-batch memory context (the fuzzer calls it
 *		between inputs; the unit tests never do);
 *	  - stub_cjson_live() counts the allocations cJSON made through the
 *		palloc hooks (palloc_extended) that are still live: after a parser
 *		returns this must be zero, or a cJSON tree was not deleted;
 *	  - pfree of a pointer that was never allocated, or freed twice, aborts.
 * Each allocation is its own malloc() block, so AddressSanitizer sees every
 * overrun.
 *
 * stub_fail_after makes the n-th later cJSON allocation fail (NULL), to
 * drive cJSON's and json.c's out-of-memory paths.  An ERROR jumps to
 * stub_error_jmp when the caller set one (as PG_TRY would catch it), else
 * aborts: the code under test must not raise one.  Messages at or above
 * stub_log_level are printed (PGSTUBS_LOG_LEVEL at build time, default
 * WARNING), unless an ERROR is expected.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "utils/memutils.h"

#include "pgstubs.h"

#ifndef PGSTUBS_LOG_LEVEL
#define PGSTUBS_LOG_LEVEL WARNING
#endif

sigjmp_buf *stub_error_jmp = NULL;
long		stub_fail_after = -1;
long		stub_cjson_allocs = 0;
int			stub_log_level = PGSTUBS_LOG_LEVEL;

/* what hubspot/http.c looks at */
volatile sig_atomic_t ProcDiePending = false;
volatile sig_atomic_t ShutdownRequestPending = false;
volatile sig_atomic_t postmaster_possibly_dead = false;
volatile sig_atomic_t QueryCancelPending = false;
volatile sig_atomic_t InterruptPending = false;
bool		IsBackgroundWorker = true;	/* the worker's path: no session cancels */
static uint32 stub_wait_event_info;
uint32	   *my_wait_event_info = &stub_wait_event_info;

/* what CHECK_FOR_INTERRUPTS() calls (never, with InterruptPending false) */
void
ProcessInterrupts(void)
{
}

static int	cur_elevel;

bool
PostmasterIsAliveInternal(void)
{
	return true;
}

/* ----------------------------------------------------------------
 * Allocation tracking: open addressing on the pointer value
 * ----------------------------------------------------------------
 */
typedef struct Slot
{
	void	   *ptr;
	bool		cjson;			/* made by cJSON through the hooks */
} Slot;

static Slot *slots = NULL;
static size_t nslots = 0;		/* a power of two */
static size_t nused = 0;
static long live_cjson = 0;

static size_t
slot_of(void *ptr)
{
	uintptr_t	h = (uintptr_t) ptr;

	h ^= h >> 17;
	h *= UINT64CONST(0x9E3779B97F4A7C15);
	h ^= h >> 29;
	return (size_t) h & (nslots - 1);
}

static void
track_insert(void *ptr, bool cjson);

static void
grow(void)
{
	Slot	   *old = slots;
	size_t		oldn = nslots;

	nslots = nslots ? nslots * 2 : 1024;
	slots = calloc(nslots, sizeof(Slot));
	if (slots == NULL)
		abort();
	nused = 0;
	live_cjson = 0;
	for (size_t i = 0; i < oldn; i++)
	{
		if (old[i].ptr != NULL)
			track_insert(old[i].ptr, old[i].cjson);
	}
	free(old);
}

static void
track_insert(void *ptr, bool cjson)
{
	size_t		i;

	if ((nused + 1) * 2 > nslots)
		grow();
	i = slot_of(ptr);
	while (slots[i].ptr != NULL)
		i = (i + 1) & (nslots - 1);
	slots[i].ptr = ptr;
	slots[i].cjson = cjson;
	nused++;
	if (cjson)
		live_cjson++;
}

static size_t
track_find(void *ptr)
{
	size_t		i;

	if (nslots == 0)
		return SIZE_MAX;
	i = slot_of(ptr);
	while (slots[i].ptr != NULL)
	{
		if (slots[i].ptr == ptr)
			return i;
		i = (i + 1) & (nslots - 1);
	}
	return SIZE_MAX;
}

/* Remove slot i, shifting later members of its probe run back. */
static void
track_remove(size_t i)
{
	size_t		j = i;

	if (slots[i].cjson)
		live_cjson--;
	slots[i].ptr = NULL;
	nused--;
	for (;;)
	{
		size_t		home;

		j = (j + 1) & (nslots - 1);
		if (slots[j].ptr == NULL)
			return;
		home = slot_of(slots[j].ptr);
		/* may slot j move to the hole at i? (cyclic distance test) */
		if (((j - home) & (nslots - 1)) >= ((j - i) & (nslots - 1)))
		{
			slots[i] = slots[j];
			slots[j].ptr = NULL;
			i = j;
		}
	}
}

static void *
alloc(Size size, bool zero, bool cjson)
{
	void	   *p;

	if (!AllocSizeIsValid(size))
	{
		fprintf(stderr, "pgstubs: invalid memory alloc request size %zu\n",
				(size_t) size);
		abort();
	}
	p = zero ? calloc(1, size ? size : 1) : malloc(size ? size : 1);
	if (p == NULL)
		abort();
	track_insert(p, cjson);
	return p;
}

void
stub_reset(void)
{
	for (size_t i = 0; i < nslots; i++)
	{
		if (slots[i].ptr != NULL)
		{
			free(slots[i].ptr);
			slots[i].ptr = NULL;
		}
	}
	nused = 0;
	live_cjson = 0;
	stub_fail_after = -1;
	stub_cjson_allocs = 0;
	stub_error_jmp = NULL;
}

long
stub_cjson_live(void)
{
	return live_cjson;
}

void *
palloc(Size size)
{
	return alloc(size, false, false);
}

void *
palloc0(Size size)
{
	return alloc(size, true, false);
}

/* The cJSON hooks' allocator (MCXT_ALLOC_NO_OOM: NULL on failure). */
void *
palloc_extended(Size size, int flags)
{
	stub_cjson_allocs++;
	if (stub_fail_after >= 0 && stub_fail_after-- == 0)
		return NULL;
	if (!AllocSizeIsValid(size) && !(flags & MCXT_ALLOC_HUGE))
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		abort();
	}
	return alloc(size, (flags & MCXT_ALLOC_ZERO) != 0, true);
}

void
pfree(void *ptr)
{
	size_t		i = track_find(ptr);

	if (i == SIZE_MAX)
	{
		fprintf(stderr, "pgstubs: pfree of %p, which is not allocated\n", ptr);
		abort();
	}
	track_remove(i);
	free(ptr);
}

void *
repalloc(void *ptr, Size size)
{
	size_t		i = track_find(ptr);
	bool		cjson;
	void	   *p;

	if (i == SIZE_MAX)
	{
		fprintf(stderr, "pgstubs: repalloc of %p, which is not allocated\n", ptr);
		abort();
	}
	if (!AllocSizeIsValid(size))
	{
		fprintf(stderr, "pgstubs: invalid memory alloc request size %zu\n",
				(size_t) size);
		abort();
	}
	cjson = slots[i].cjson;
	track_remove(i);
	p = realloc(ptr, size ? size : 1);
	if (p == NULL)
		abort();
	track_insert(p, cjson);
	return p;
}

char *
pstrdup(const char *s)
{
	size_t		n = strlen(s);

	return memcpy(palloc(n + 1), s, n + 1);
}

char *
psprintf(const char *fmt,...)
{
	va_list		ap;
	char	   *p;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	p = palloc(n + 1);
	va_start(ap, fmt);
	vsnprintf(p, n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* ----------------------------------------------------------------
 * ereport
 * ----------------------------------------------------------------
 */
bool
errstart(int elevel, const char *domain)
{
	cur_elevel = elevel;
	return elevel >= stub_log_level || elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (cur_elevel >= ERROR)
	{
		if (stub_error_jmp != NULL)
			siglongjmp(*stub_error_jmp, 1);
		fprintf(stderr, "pgstubs: unexpected ERROR at %s:%d (%s)\n",
				filename, lineno, funcname);
		abort();
	}
}

int
errcode(int sqlerrcode)
{
	return 0;
}

static int
message(const char *fmt, va_list ap)
{
	/* an ERROR the caller expects is not worth printing */
	if (stub_error_jmp == NULL || cur_elevel < ERROR)
	{
		fprintf(stderr, "[elevel %d] ", cur_elevel);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	message(fmt, ap);
	va_end(ap);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	message(fmt, ap);
	va_end(ap);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	message(fmt, ap);
	va_end(ap);
	return 0;
}

/*-------------------------------------------------------------------------
 *
 * pgstubs.c
 *	  Just enough of the backend (palloc, ereport, interrupt flags) to run
 *	  worker/http.c and worker/json.c outside a server, for unit tests.
 *
 * Memory is plain malloc and is never reclaimed; ERROR and above print the
 * message and abort(), since the code under test must not raise them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "utils/memutils.h"

volatile sig_atomic_t ProcDiePending = false;
volatile sig_atomic_t ShutdownRequestPending = false;
volatile sig_atomic_t postmaster_possibly_dead = false;
volatile sig_atomic_t QueryCancelPending = false;
volatile sig_atomic_t InterruptPending = false;
bool		IsBackgroundWorker = true;	/* the worker's path: no session cancels */
static uint32 stub_wait_event_info;
uint32	   *my_wait_event_info = &stub_wait_event_info;

void
ProcessInterrupts(void)
{
}

int			stub_log_level = WARNING;	/* print messages at or above this */
static int	cur_elevel;

bool
PostmasterIsAliveInternal(void)
{
	return true;
}

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
		fprintf(stderr, "unexpected ERROR at %s:%d\n", filename, lineno);
		abort();
	}
}

int
errcode(int sqlerrcode)
{
	return 0;
}

static int
vmsg(const char *fmt, va_list ap)
{
	fprintf(stderr, "[elevel %d] ", cur_elevel);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	return 0;
}

void *
palloc(Size size)
{
	void	   *p = malloc(size ? size : 1);

	if (p == NULL)
		abort();
	return p;
}

void *
palloc0(Size size)
{
	void	   *p = calloc(1, size ? size : 1);

	if (p == NULL)
		abort();
	return p;
}

void *
palloc_extended(Size size, int flags)
{
	void	   *p = malloc(size ? size : 1);

	if (p && (flags & MCXT_ALLOC_ZERO))
		memset(p, 0, size);
	return p;
}

void *
repalloc(void *ptr, Size size)
{
	void	   *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		abort();
	return p;
}

void
pfree(void *ptr)
{
	free(ptr);
}

char *
pstrdup(const char *s)
{
	return strcpy(palloc(strlen(s) + 1), s);
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

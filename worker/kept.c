/*-------------------------------------------------------------------------
 *
 * kept.c
 *	  Statements the worker runs again and again (every batch, every round
 *	  or every cycle), planned once and kept for the worker's life: SPI_prepare
 *	  and SPI_keepplan instead of a parse and a plan at each call, which
 *	  cost more than running most of them.
 *
 *	  A statement is known by its text (with the types of its arguments,
 *	  which its callers never vary).  The plan cache keeps a kept plan
 *	  valid: it is parsed and planned again when what it uses changes (an
 *	  ALTER EXTENSION UPDATE that redefines a function, a DROP and CREATE
 *	  EXTENSION).  Statements whose text is built from data would fill the
 *	  list: past ERPCRM_KEPT_MAX, statements run as SPI_execute_with_args
 *	  runs them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "kept.h"

#define ERPCRM_KEPT_MAX 64

typedef struct KeptPlan
{
	char	   *sql;
	int			nargs;
	SPIPlanPtr	plan;
} KeptPlan;

static KeptPlan kept[ERPCRM_KEPT_MAX];
static int	nkept = 0;

/*
 * Run sql as SPI_execute_with_args() would (SPI connected), with a plan
 * kept from an earlier call when there is one.
 */
int
erpcrm_execute_kept(const char *sql, int nargs, Oid *argtypes, Datum *values,
					const char *nulls, bool read_only, long count)
{
	SPIPlanPtr	plan = NULL;

	for (int i = 0; i < nkept; i++)
		if (kept[i].nargs == nargs && strcmp(kept[i].sql, sql) == 0)
		{
			plan = kept[i].plan;
			break;
		}
	if (plan == NULL)
	{
		if (nkept == ERPCRM_KEPT_MAX)
			return SPI_execute_with_args(sql, nargs, argtypes, values, nulls,
										 read_only, count);
		plan = SPI_prepare(sql, nargs, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
		kept[nkept].sql = MemoryContextStrdup(TopMemoryContext, sql);
		kept[nkept].nargs = nargs;
		kept[nkept].plan = plan;
		nkept++;
	}
	return SPI_execute_plan(plan, values, nulls, read_only, count);
}

/*
 * The same with enable_sort off while it is planned and run: the reads of
 * the due queue (mapping_id, next_attempt_at order), whose index does not
 * mention state (see sync_queue_due), are index scans whatever the
 * statistics say, never a sort of the mapping's keys.
 */
int
erpcrm_execute_kept_unsorted(const char *sql, int nargs, Oid *argtypes,
							 Datum *values, bool read_only, long count)
{
	int			nestlevel = NewGUCNestLevel();
	int			ret;

	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	ret = erpcrm_execute_kept(sql, nargs, argtypes, values, NULL, read_only, count);
	AtEOXact_GUC(true, nestlevel);
	return ret;
}

/* The same for a statement without arguments, as SPI_execute() runs it. */
int
erpcrm_run_kept(const char *sql, bool read_only, long count)
{
	return erpcrm_execute_kept(sql, 0, NULL, NULL, NULL, read_only, count);
}

/*-------------------------------------------------------------------------
 *
 * kept.h
 *	  Statements the worker runs again and again, planned once and kept for
 *	  its life (kept.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_KEPT_H
#define ERPCRM_KEPT_H

#include "postgres.h"

extern int	erpcrm_execute_kept(const char *sql, int nargs, Oid *argtypes,
								Datum *values, const char *nulls,
								bool read_only, long count);
extern int	erpcrm_execute_kept_unsorted(const char *sql, int nargs, Oid *argtypes,
										 Datum *values, bool read_only, long count);
extern int	erpcrm_run_kept(const char *sql, bool read_only, long count);

#endif							/* ERPCRM_KEPT_H */

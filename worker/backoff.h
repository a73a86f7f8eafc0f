/*-------------------------------------------------------------------------
 *
 * backoff.h
 *	  The one retry formula of erpcrm (backoff.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_BACKOFF_H
#define ERPCRM_BACKOFF_H

#include "postgres.h"

extern double erpcrm_backoff_ms(double base_ms, double max_ms, int attempt);

#endif							/* ERPCRM_BACKOFF_H */

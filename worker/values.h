/*-------------------------------------------------------------------------
 *
 * values.h
 *	  Column values to HubSpot property strings (values.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_VALUES_H
#define ERPCRM_VALUES_H

#include "postgres.h"

extern char *erpcrm_property_value(Datum value, bool isnull, Oid typid);

#endif							/* ERPCRM_VALUES_H */

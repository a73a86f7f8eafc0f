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

/* HubSpot's limit on a property value, in characters */
#define ERPCRM_MAX_VALUE_CHARS	65536

extern char *erpcrm_property_value(Datum value, bool isnull, Oid typid,
								   const char **problem);
extern int	erpcrm_value_chars(const char *utf8);

#endif							/* ERPCRM_VALUES_H */

/*-------------------------------------------------------------------------
 *
 * values.c
 *	  Turning a column value of a mapping view into the string HubSpot
 *	  expects for a property: text as is, numbers as plain decimals, booleans
 *	  as true/false, dates as YYYY-MM-DD, timestamps as ISO 8601 in UTC, and
 *	  NULL as "" (which clears the property: the ERP is the source of truth).
 *
 *	  A value HubSpot cannot hold (a numeric NaN or infinity, a date or
 *	  timestamp at +-infinity or outside the years 1-9999) is never sent as
 *	  "", which would clear the property: it gives NULL and a reason, and the
 *	  key fails with category ERP_VALUE_NOT_REPRESENTABLE.
 *
 * Strings are returned in UTF-8 whatever the server encoding.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "values.h"

/*
 * The text in UTF-8.  An SQL_ASCII database can hold bytes that are no
 * UTF-8 at all: such a value cannot be sent (NULL, with the reason).
 */
static char *
to_utf8(char *s, const char **problem)
{
	if (GetDatabaseEncoding() == PG_SQL_ASCII)
	{
		if (!pg_verify_mbstr(PG_UTF8, s, strlen(s), true))
		{
			*problem = "the text is not valid UTF-8 (the database encoding is SQL_ASCII)";
			return NULL;
		}
		return s;
	}
	if (GetDatabaseEncoding() == PG_UTF8)
		return s;
	return pg_server_to_any(s, strlen(s), PG_UTF8);
}

/* ISO 8601 in UTC with milliseconds: 2024-05-01T09:30:00.000Z */
static char *
format_utc(TimestampTz ts, const char **problem)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts))
	{
		*problem = TIMESTAMP_IS_NOBEGIN(ts) ?
			"the timestamp -infinity has no HubSpot value" :
			"the timestamp infinity has no HubSpot value";
		return NULL;
	}
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
	{
		*problem = "the timestamp is outside the years 1 to 9999, which HubSpot cannot hold";
		return NULL;
	}
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (fsec / 1000));
}

char *
erpcrm_property_value(Datum value, bool isnull, Oid typid, const char **problem)
{
	*problem = NULL;
	if (isnull)
		return pstrdup("");

	switch (typid)
	{
		case BOOLOID:
			return pstrdup(DatumGetBool(value) ? "true" : "false");

		case INT2OID:
		case INT4OID:
		case INT8OID:
		case NUMERICOID:
			{
				Oid			out;
				bool		varlena;
				char	   *s;

				getTypeOutputInfo(typid, &out, &varlena);
				s = OidOutputFunctionCall(out, value);
				/* NaN and infinities have no HubSpot number */
				if (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 ||
					strcmp(s, "-Infinity") == 0)
				{
					*problem = psprintf("the number %s has no HubSpot value", s);
					return NULL;
				}
				return s;
			}

		case FLOAT4OID:
		case FLOAT8OID:
			{
				double		d = (typid == FLOAT4OID) ?
				(double) DatumGetFloat4(value) : DatumGetFloat8(value);
				Datum		n;

				if (isnan(d) || isinf(d))
				{
					*problem = isnan(d) ? "the number NaN has no HubSpot value" :
						d > 0 ? "the number Infinity has no HubSpot value" :
						"the number -Infinity has no HubSpot value";
					return NULL;
				}
				/* through numeric: plain decimal, never 1e+20 */
				n = DirectFunctionCall1(float8_numeric, Float8GetDatum(d));
				return DatumGetCString(DirectFunctionCall1(numeric_out, n));
			}

		case DATEOID:
			{
				DateADT		date = DatumGetDateADT(value);
				int			y,
							m,
							d;

				if (DATE_NOT_FINITE(date))
				{
					*problem = DATE_IS_NOBEGIN(date) ?
						"the date -infinity has no HubSpot value" :
						"the date infinity has no HubSpot value";
					return NULL;
				}
				j2date(date + POSTGRES_EPOCH_JDATE, &y, &m, &d);
				if (y < 1 || y > 9999)
				{
					*problem = "the date is outside the years 1 to 9999, which HubSpot cannot hold";
					return NULL;
				}
				return psprintf("%04d-%02d-%02d", y, m, d);
			}

		case TIMESTAMPTZOID:
			return format_utc(DatumGetTimestampTz(value), problem);

		case TIMESTAMPOID:
			{
				Timestamp	ts = DatumGetTimestamp(value);

				struct pg_tm tm;
				fsec_t		fsec;

				if (TIMESTAMP_NOT_FINITE(ts))
					return format_utc(ts, problem);
				/* out of range before it is converted (which could fail) */
				if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0 ||
					tm.tm_year < 1 || tm.tm_year > 9999)
				{
					*problem = "the timestamp is outside the years 1 to 9999, which HubSpot cannot hold";
					return NULL;
				}
				/* a local time of the server's TimeZone */
				return format_utc(DatumGetTimestampTz(DirectFunctionCall1(timestamp_timestamptz,
																		  TimestampGetDatum(ts))),
								  problem);
			}

		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
			{
				Oid			out;
				bool		varlena;

				getTypeOutputInfo(typid, &out, &varlena);
				return to_utf8(OidOutputFunctionCall(out, value), problem);
			}

		default:
			{
				Oid			out;
				bool		varlena;

				/* domains, uuid, json, enums, arrays: their text form */
				getTypeOutputInfo(typid, &out, &varlena);
				return to_utf8(OidOutputFunctionCall(out, value), problem);
			}
	}
}

/*
 * Length of a UTF-8 string in characters as HubSpot counts them: UTF-16
 * code units, so a character beyond the Basic Multilingual Plane (most
 * emoji) counts twice.
 */
int
erpcrm_value_chars(const char *utf8)
{
	int			n = 0;

	for (const unsigned char *p = (const unsigned char *) utf8; *p; p++)
	{
		if ((*p & 0xC0) != 0x80)
			n++;
		if ((*p & 0xF8) == 0xF0)
			n++;
	}
	return n;
}

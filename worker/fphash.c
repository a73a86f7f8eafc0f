/*-------------------------------------------------------------------------
 *
 * fphash.c
 *	  The fingerprint of one key: a hash of the exact content erpcrm sends
 *	  to HubSpot for it (properties, the object it updates, the HubSpot ids
 *	  of its association targets).  The worker stores it when HubSpot
 *	  accepts the key (sync_state.fingerprint) and sends a dirtied key only
 *	  when its fingerprint changed; erpcrm._fingerprints() (fingerprint.c)
 *	  gives the same hash to erpcrm.refresh().
 *
 *	  The hash is the first 8 bytes of a SHA-256 over a canonical encoding:
 *	  every field length-prefixed, properties in name order (the order of
 *	  the view's columns does not matter), associations in column order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "lib/stringinfo.h"

#include "fphash.h"

/* the encoding's version: change it and every stored fingerprint is stale */
#define FINGERPRINT_VERSION "erpcrm-fingerprint-1"

static void
put_field(StringInfo buf, const char *s)
{
	uint32		len = s ? (uint32) strlen(s) : 0xFFFFFFFF;
	unsigned char b[4];

	/* fixed byte order, whatever the platform's */
	b[0] = (len >> 24) & 0xFF;
	b[1] = (len >> 16) & 0xFF;
	b[2] = (len >> 8) & 0xFF;
	b[3] = len & 0xFF;
	appendBinaryStringInfo(buf, (const char *) b, 4);
	if (s)
		appendBinaryStringInfo(buf, s, (int) len);
}

static const char *const *sort_names;

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(sort_names[*(const int *) a], sort_names[*(const int *) b]);
}

int64
erpcrm_fingerprint(const FingerprintInput *in)
{
	StringInfoData buf;
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	int		   *order;
	uint64		h = 0;

	initStringInfo(&buf);
	put_field(&buf, FINGERPRINT_VERSION);
	appendStringInfo(&buf, "%d", in->epoch);
	appendStringInfoChar(&buf, '\0');
	put_field(&buf, in->object_type);
	put_field(&buf, in->id_property);
	put_field(&buf, in->explicit_id);

	order = palloc(sizeof(int) * Max(in->nprops, 1));
	for (int p = 0; p < in->nprops; p++)
		order[p] = p;
	sort_names = in->names;
	qsort(order, in->nprops, sizeof(int), cmp_names);
	appendStringInfo(&buf, "%d", in->nprops);
	appendStringInfoChar(&buf, '\0');
	for (int p = 0; p < in->nprops; p++)
	{
		put_field(&buf, in->names[order[p]]);
		put_field(&buf, in->values[order[p]]);
	}
	appendStringInfo(&buf, "%d", in->nassoc);
	appendStringInfoChar(&buf, '\0');
	for (int a = 0; a < in->nassoc; a++)
	{
		put_field(&buf, in->assoc_columns[a]);
		put_field(&buf, in->assoc_to ? in->assoc_to[a] : NULL);
	}

	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) buf.data, buf.len) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute a fingerprint: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	for (int i = 0; i < 8; i++)
		h = (h << 8) | digest[i];
	pfree(order);
	pfree(buf.data);
	return (int64) h;
}

/*-------------------------------------------------------------------------
 *
 * roles.c
 *	  Owners that are dropped.  A mapping's view, a watch's key query and a
 *	  subscription's handler run as the role that defined them, recorded in
 *	  erpcrm's own tables, where PostgreSQL keeps no shared dependency on
 *	  the role.  So, in the database the statement runs in:
 *
 *	  - DROP ROLE refuses a role that owns erpcrm objects there, with the
 *		same words as PostgreSQL's refusal for tables it owns;
 *	  - REASSIGN OWNED BY ... TO ... hands erpcrm's objects on as well.
 *
 *	  A role dropped from another database of the cluster escapes both (as
 *	  no hook sees another database's tables); the worker then finds the
 *	  owner gone and stops those objects with a problem that says so, until
 *	  erpcrm.reassign_owned() gives them an owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "erpcrm.h"

/*
 * Is erpcrm installed here, with the functions below (1.3)?  SPI is
 * connected, as the bootstrap superuser.
 */
static bool
owners_known(void)
{
	if (!OidIsValid(get_extension_oid("erpcrm", true)))
		return false;
	return SPI_execute("SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n"
					   " ON n.oid = p.pronamespace"
					   " WHERE n.nspname = 'erpcrm' AND p.proname = '_owned_reassigned'",
					   true, 1) == SPI_OK_SELECT && SPI_processed == 1;
}

/*
 * Run erpcrm's fixed queries as the bootstrap superuser: the role that
 * drops or reassigns may read none of erpcrm's tables.  No code of anyone
 * else runs meanwhile (the functions called are erpcrm's own, with a fixed
 * search_path).
 */
typedef struct AsBootstrap
{
	Oid			userid;
	int			sec_context;
} AsBootstrap;

static void
as_bootstrap_begin(AsBootstrap *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
}

static void
as_bootstrap_end(AsBootstrap *saved)
{
	SPI_finish();
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/* DROP ROLE: refuse a role that owns erpcrm objects in this database. */
static void
refuse_drop_role(DropRoleStmt *stmt)
{
	AsBootstrap saved;
	ListCell   *lc;

	if (!OidIsValid(get_extension_oid("erpcrm", true)))
		return;
	/* who may not drop roles hears that from PostgreSQL, not what they own */
	if (!has_createrole_privilege(GetUserId()))
		return;
	as_bootstrap_begin(&saved);
	if (owners_known())
	{
		foreach(lc, stmt->roles)
		{
			RoleSpec   *spec = lfirst(lc);
			Oid			role = get_rolespec_oid(spec, true);
			Oid			argtypes[1] = {OIDOID};
			Datum		args[1];
			StringInfoData detail;

			if (!OidIsValid(role))
				continue;
			args[0] = ObjectIdGetDatum(role);
			if (SPI_execute_with_args("SELECT d FROM erpcrm._owned_by($1) AS d",
									  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "erpcrm._owned_by failed");
			if (SPI_processed == 0)
				continue;
			initStringInfo(&detail);
			for (uint64 i = 0; i < SPI_processed; i++)
				appendStringInfo(&detail, "%s%s", i > 0 ? "\n" : "",
								 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
							get_rolespec_name(spec)),
					 errdetail_internal("%s", detail.data),
					 errhint("Hand them to another role first, in every database with erpcrm: REASSIGN OWNED BY %s TO ... (or SELECT erpcrm.reassign_owned(%s, ...)), or drop them with erpcrm.unmap(), erpcrm.unwatch() or erpcrm.unsubscribe().",
							 quote_identifier(get_rolespec_name(spec)),
							 /* a regrole literal: the name as an identifier, quoted as a string */
							 quote_literal_cstr(quote_identifier(get_rolespec_name(spec))))));
		}
	}
	as_bootstrap_end(&saved);
}

/* REASSIGN OWNED BY ... TO ...: erpcrm's objects of this database too. */
static void
reassign_owned(ReassignOwnedStmt *stmt)
{
	AsBootstrap saved;
	Datum	   *oids;
	int			n = 0;
	Oid			newrole;
	ListCell   *lc;

	if (!OidIsValid(get_extension_oid("erpcrm", true)))
		return;
	/* PostgreSQL's own REASSIGN OWNED checked both roles already */
	newrole = get_rolespec_oid(stmt->newrole, false);
	oids = palloc(sizeof(Datum) * Max(list_length(stmt->roles), 1));
	foreach(lc, stmt->roles)
	{
		Oid			role = get_rolespec_oid(lfirst(lc), false);

		oids[n++] = ObjectIdGetDatum(role);
	}

	as_bootstrap_begin(&saved);
	if (owners_known())
	{
		Oid			argtypes[2] = {OIDARRAYOID, OIDOID};
		Datum		args[2];

		args[0] = PointerGetDatum(construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
		args[1] = ObjectIdGetDatum(newrole);
		if (SPI_execute_with_args("SELECT erpcrm._owned_reassigned($1, $2)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._owned_reassigned failed");
	}
	as_bootstrap_end(&saved);
}

/* From the utility hook, before PostgreSQL runs the statement. */
void
erpcrm_roles_before(Node *parsetree)
{
	if (IsA(parsetree, DropRoleStmt) && IsTransactionState())
		refuse_drop_role((DropRoleStmt *) parsetree);
}

/* From the utility hook, after PostgreSQL ran the statement. */
void
erpcrm_roles_after(Node *parsetree)
{
	if (IsA(parsetree, ReassignOwnedStmt) && IsTransactionState())
		reassign_owned((ReassignOwnedStmt *) parsetree);
}

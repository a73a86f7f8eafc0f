/*-------------------------------------------------------------------------
 *
 * keyexpr.c
 *	  Key expressions of watches: compiled once against the watched table
 *	  when erpcrm.watch() is called (parse, analyse, coerce to text, stored as
 *	  a node tree the way PostgreSQL stores index expressions), and turned into
 *	  a ready-to-run ExprState once per backend and trigger on the capture
 *	  path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "access/attmap.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "capture.h"

/* Reject what makes no sense in a key: system columns, whole rows. */
static bool
check_vars_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varattno <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("key expression cannot use system columns or whole rows"),
					 errdetail("A key must stay the same when the row is updated in place."),
					 errhint("Use ordinary columns of the table, for example: invoice_id::text.")));
		return false;
	}
	return expression_tree_walker(node, check_vars_walker, context);
}

/*
 * Errors point into the key expression, not into the statement that called
 * erpcrm.watch().
 */
static void
key_error_callback(void *arg)
{
	const char *source = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(source);
	}
	errcontext("key expression of erpcrm.watch()");
}

/*
 * erpcrm._compile_key(table regclass, expression text) returns text
 *
 * Parses the expression as a value computed from one row of the table and
 * returns its analysed, text-typed node tree.  Errors say what is wrong.
 */
PG_FUNCTION_INFO_V1(erpcrm_compile_key_v1);
Datum
erpcrm_compile_key_v1(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel;
	List	   *raw;
	RawStmt    *rawstmt;
	SelectStmt *select;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	Oid			type;

	ErrorContextCallback errcallback;

	rel = relation_open(relid, AccessShareLock);

	errcallback.callback = key_error_callback;
	errcallback.arg = source;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	raw = raw_parser(source, RAW_PARSE_PLPGSQL_EXPR);
	rawstmt = linitial_node(RawStmt, raw);
	select = (SelectStmt *) rawstmt->stmt;
	if (list_length(raw) != 1 || !IsA(select, SelectStmt) ||
		list_length(select->targetList) != 1 ||
		select->fromClause != NIL || select->whereClause != NULL ||
		select->groupClause != NIL || select->havingClause != NULL ||
		select->windowClause != NIL || select->sortClause != NIL ||
		select->distinctClause != NIL || select->limitCount != NULL ||
		select->limitOffset != NULL || select->lockingClause != NIL ||
		select->withClause != NULL || select->intoClause != NULL ||
		select->valuesLists != NIL || select->op != SETOP_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("key expression \"%s\" is not a single expression", source),
				 errhint("Give one expression over the columns of %s, for example: order_id::text or a || '/' || b.",
						 RelationGetRelationName(rel))));
	target = linitial_node(ResTarget, select->targetList);
	if (target->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("key expression \"%s\" must not name its result", source)));

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = source;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   NULL, false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);

	expr = transformExpr(pstate, target->val, EXPR_KIND_OTHER);

	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("key expression cannot use aggregate or window functions")));
	if (pstate->p_hasTargetSRFs || expression_returns_set(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key expression cannot return a set")));
	if (checkExprHasSubLink(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key expression cannot use a subquery"),
				 errdetail("The key is computed from the changed row alone, on the ERP's write path."),
				 errhint("Compute the key from the row's own columns; put lookups into the mapping view.")));
	check_vars_walker(expr, NULL);

	type = exprType(expr);
	expr = coerce_to_target_type(pstate, expr, type, TEXTOID, -1,
								 COERCION_EXPLICIT, COERCE_EXPLICIT_CAST, -1);
	if (expr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("key expression \"%s\" of type %s cannot be cast to text",
						source, format_type_be(type)),
				 errhint("Keys are text; add an explicit conversion.")));
	assign_expr_collations(pstate, expr);

	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("key expression \"%s\" uses a volatile function", source),
				 errdetail("The key of a row must come out the same every time it is computed.")));

	error_context_stack = errcallback.previous;
	free_parsestate(pstate);
	relation_close(rel, AccessShareLock);

	PG_RETURN_TEXT_P(cstring_to_text(nodeToString(expr)));
}

/* ----------------------------------------------------------------
 * Run time: watch definitions cached per backend, keyed by trigger
 * ----------------------------------------------------------------
 */
static HTAB *watch_cache = NULL;
static MemoryContext watch_cxt = NULL;

/*
 * Read one watch row directly (the ERP's role has no privilege on erpcrm's
 * tables, and needs none: the trigger is trusted code).
 */
static bool
read_watch(int32 watch_id, int32 *mapping_id, Oid *source, char **tree)
{
	Oid			nsp = get_namespace_oid("erpcrm", true);
	Oid			relid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;
	AttrNumber	a_id,
				a_map,
				a_src,
				a_tree;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid("watch", nsp);
	if (!OidIsValid(relid))
		return false;

	rel = table_open(relid, AccessShareLock);
	a_id = get_attnum(relid, "watch_id");
	a_map = get_attnum(relid, "mapping_id");
	a_src = get_attnum(relid, "source");
	a_tree = get_attnum(relid, "key_tree");

	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull);

		if (isnull || DatumGetInt32(d) != watch_id)
			continue;
		*mapping_id = DatumGetInt32(heap_getattr(tup, a_map, RelationGetDescr(rel), &isnull));
		*source = DatumGetObjectId(heap_getattr(tup, a_src, RelationGetDescr(rel), &isnull));
		d = heap_getattr(tup, a_tree, RelationGetDescr(rel), &isnull);
		*tree = isnull ? NULL : TextDatumGetCString(d);
		found = (*tree != NULL);
		break;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The capture state for one trigger of one table, built on first use in this
 * backend.  Watches are never altered (unwatch + watch makes a new trigger),
 * so entries need no invalidation.
 */
WatchEntry *
erpcrm_watch_entry(Trigger *trigger, Relation rel)
{
	WatchEntry *entry;
	bool		found;
	int32		watch_id;
	int32		mapping_id;
	Oid			source;
	char	   *tree;
	Node	   *expr;
	Oid			relid = RelationGetRelid(rel);
	MemoryContext old;

	if (watch_cache == NULL)
	{
		HASHCTL		ctl;

		watch_cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm watches",
										  ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(WatchKey);
		ctl.entrysize = sizeof(WatchEntry);
		ctl.hcxt = watch_cxt;
		watch_cache = hash_create("erpcrm watches", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	{
		WatchKey	key;

		key.tgoid = trigger->tgoid;
		key.relid = relid;
		entry = hash_search(watch_cache, &key, HASH_FIND, &found);
		if (found)
			return entry;
	}

	if (trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on %s is not an erpcrm watch",
						trigger->tgname, RelationGetRelationName(rel)),
				 errhint("Create capture triggers with erpcrm.watch().")));
	watch_id = pg_strtoint32(trigger->tgargs[0]);

	if (!read_watch(watch_id, &mapping_id, &source, &tree))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on %s names erpcrm watch %d, which does not exist",
						trigger->tgname, RelationGetRelationName(rel), watch_id),
				 errhint("Drop the trigger and watch the table again with erpcrm.watch().")));

	expr = stringToNode(tree);

	/* a partition fires the trigger of its partitioned ancestor */
	if (source != relid)
	{
		List	   *ancestors = NIL;
		Relation	parent;
		AttrMap    *map;
		bool		found_whole_row;

		if (get_rel_relispartition(relid))
			ancestors = get_partition_ancestors(relid);
		if (!list_member_oid(ancestors, source))
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("trigger \"%s\" on %s belongs to erpcrm watch %d of another table",
							trigger->tgname, RelationGetRelationName(rel), watch_id),
					 errhint("Drop the trigger and watch the table with erpcrm.watch().")));
		parent = table_open(source, AccessShareLock);
		map = build_attrmap_by_name(RelationGetDescr(rel), RelationGetDescr(parent));
		expr = map_variable_attnos(expr, 1, 0, map, InvalidOid, &found_whole_row);
		table_close(parent, AccessShareLock);
	}

	{
		WatchKey	key;
		Oid			outbox_relid;
		Expr	   *planned;
		ExprState  *state;
		ExprContext *econtext;

		outbox_relid = get_relname_relid("outbox",
										 get_namespace_oid("erpcrm", false));
		if (!OidIsValid(outbox_relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"erpcrm.outbox\" does not exist"),
					 errhint("Reinstall the extension with ALTER EXTENSION erpcrm UPDATE or DROP/CREATE EXTENSION.")));

		old = MemoryContextSwitchTo(watch_cxt);
		planned = expression_planner((Expr *) copyObject(expr));
		state = ExecInitExpr(planned, NULL);
		econtext = CreateStandaloneExprContext();
		MemoryContextSwitchTo(old);

		key.tgoid = trigger->tgoid;
		key.relid = relid;
		entry = hash_search(watch_cache, &key, HASH_ENTER, &found);
		entry->watch_id = watch_id;
		entry->mapping_id = mapping_id;
		entry->outbox_relid = outbox_relid;
		entry->expr = state;
		entry->econtext = econtext;
		entry->last_lxid = InvalidLocalTransactionId;
		entry->last_subxid = InvalidSubTransactionId;
		entry->last_key = NULL;
		entry->last_key_len = 0;
		entry->last_key_cap = 0;
	}
	return entry;
}

/*
 * The key of a row, or NULL when the expression gives NULL.  The result is
 * allocated in the entry's per-tuple context, reset by the caller.
 */
Datum
erpcrm_eval_key(WatchEntry *entry, TupleTableSlot *slot, bool *isnull)
{
	entry->econtext->ecxt_scantuple = slot;
	return ExecEvalExpr(entry->expr, entry->econtext, isnull);
}

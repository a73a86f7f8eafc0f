/*-------------------------------------------------------------------------
 *
 * json.c
 *	  HubSpot request bodies and response parsing, with cJSON.
 *
 * cJSON's allocations are routed through palloc (cJSON_InitHooks), so a
 * tree lands in the caller's CurrentMemoryContext and is reclaimed by a
 * context reset even when an ERROR interrupts its use.  The hooks use
 * MCXT_ALLOC_NO_OOM: cJSON sees NULL on out-of-memory and unwinds by itself,
 * so no longjmp ever crosses cJSON's code.  Trees are still deleted when
 * done with.
 *
 * Request bodies are built only with cJSON's constructors, so escaping is
 * cJSON's and never string pasting.  Response parsing checks the type of
 * every node before use: the parser must survive any input, and an answer
 * of the wrong shape is refused as a whole rather than half used.
 *
 * Every string returned is palloc'd in CurrentMemoryContext, and is valid
 * UTF-8 (invalid bytes are replaced by '?'), so that callers can store it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <cjson/cJSON.h>

#include "utils/memutils.h"

#include "hubspot.h"

struct HsJsonBody
{
	cJSON	   *root;			/* {"inputs": [...]} */
	cJSON	   *inputs;			/* the array inside root */
	int			count;
};

/* ----------------------------------------------------------------
 * Allocation hooks
 * ----------------------------------------------------------------
 */

static void *
hs_cjson_malloc(size_t size)
{
	if (size == 0)
		size = 1;
	if (!AllocSizeIsValid(size))
		return NULL;
	return palloc_extended(size, MCXT_ALLOC_NO_OOM);
}

static void
hs_cjson_free(void *ptr)
{
	if (ptr != NULL)
		pfree(ptr);
}

static void
hs_json_setup(void)
{
	static bool done = false;
	cJSON_Hooks hooks;

	if (done)
		return;
	hooks.malloc_fn = hs_cjson_malloc;
	hooks.free_fn = hs_cjson_free;
	cJSON_InitHooks(&hooks);
	done = true;
}

/* ERROR out when cJSON reports an allocation failure (outside cJSON). */
static void
json_oom(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("out of memory"),
			 errdetail("Failed while building a HubSpot request body.")));
}

/* ----------------------------------------------------------------
 * Request bodies
 * ----------------------------------------------------------------
 */

HsJsonBody *
hs_body_new(void)
{
	HsJsonBody *body;

	hs_json_setup();
	body = palloc0(sizeof(HsJsonBody));
	body->root = cJSON_CreateObject();
	if (body->root == NULL)
		json_oom();
	body->inputs = cJSON_AddArrayToObject(body->root, "inputs");
	if (body->inputs == NULL)
	{
		cJSON_Delete(body->root);
		json_oom();
	}
	return body;
}

int
hs_body_count(HsJsonBody *body)
{
	return body ? body->count : 0;
}

/* Append an input object to the body's array. */
static void
body_append(HsJsonBody *body, cJSON *input)
{
	if (body == NULL || body->inputs == NULL)
	{
		cJSON_Delete(input);
		elog(ERROR, "erpcrm: request body used after hs_body_finish");
	}
	if (!cJSON_AddItemToArray(body->inputs, input))
	{
		cJSON_Delete(input);
		json_oom();
	}
	body->count++;
}

/* Add {"name": "value"} to obj; a NULL value becomes "". */
static bool
add_string(cJSON *obj, const char *name, const char *value)
{
	return cJSON_AddStringToObject(obj, name, value ? value : "") != NULL;
}

/*
 * Build a "properties" object from parallel arrays.  When extra_name is not
 * NULL and not among names, it is added with extra_value.  Returns false on
 * out-of-memory.  A NULL name is skipped (it cannot be a property).
 */
static bool
add_properties(cJSON *input, int nprops, const char *const *names,
			   const char *const *values, const char *extra_name,
			   const char *extra_value)
{
	cJSON	   *props;
	int			i;
	bool		have_extra = false;

	props = cJSON_AddObjectToObject(input, "properties");
	if (props == NULL)
		return false;
	for (i = 0; i < nprops; i++)
	{
		if (names[i] == NULL)
			continue;
		if (extra_name && strcmp(names[i], extra_name) == 0)
			have_extra = true;
		/* a repeated name would make an ambiguous object: first one wins */
		if (cJSON_GetObjectItemCaseSensitive(props, names[i]) != NULL)
			continue;
		if (!add_string(props, names[i], values ? values[i] : NULL))
			return false;
	}
	if (extra_name && !have_extra)
	{
		if (!add_string(props, extra_name, extra_value))
			return false;
	}
	return true;
}

void
hs_body_add_upsert(HsJsonBody *body, const char *id_property, const char *id,
				   int nprops, const char *const *names,
				   const char *const *values)
{
	cJSON	   *input = cJSON_CreateObject();

	if (input == NULL)
		json_oom();
	if (!add_string(input, "idProperty", id_property) ||
		!add_string(input, "id", id) ||
		!add_properties(input, nprops, names, values,
						id_property, id))
	{
		cJSON_Delete(input);
		json_oom();
	}
	body_append(body, input);
}

void
hs_body_add_update(HsJsonBody *body, const char *hubspot_id, int nprops,
				   const char *const *names, const char *const *values)
{
	cJSON	   *input = cJSON_CreateObject();

	if (input == NULL)
		json_oom();
	if (!add_string(input, "id", hubspot_id) ||
		!add_properties(input, nprops, names, values, NULL, NULL))
	{
		cJSON_Delete(input);
		json_oom();
	}
	body_append(body, input);
}

void
hs_body_add_archive(HsJsonBody *body, const char *hubspot_id)
{
	cJSON	   *input = cJSON_CreateObject();

	if (input == NULL)
		json_oom();
	if (!add_string(input, "id", hubspot_id))
	{
		cJSON_Delete(input);
		json_oom();
	}
	body_append(body, input);
}

void
hs_body_add_association(HsJsonBody *body, const char *from_id,
						const char *to_id, const char *category, int type_id)
{
	cJSON	   *input = cJSON_CreateObject();
	cJSON	   *from;
	cJSON	   *to;
	bool		ok;

	if (input == NULL)
		json_oom();
	from = cJSON_AddObjectToObject(input, "from");
	to = from ? cJSON_AddObjectToObject(input, "to") : NULL;
	ok = (from != NULL && to != NULL &&
		  add_string(from, "id", from_id) &&
		  add_string(to, "id", to_id));
	if (ok && type_id > 0)
	{
		cJSON	   *types = cJSON_AddArrayToObject(input, "types");
		cJSON	   *type = cJSON_CreateObject();

		if (types == NULL || type == NULL ||
			!cJSON_AddItemToArray(types, type))
		{
			if (type != NULL)
				cJSON_Delete(type);
			ok = false;
		}
		else
			ok = add_string(type, "associationCategory",
							category ? category : "HUBSPOT_DEFINED") &&
				cJSON_AddNumberToObject(type, "associationTypeId",
										(double) type_id) != NULL;
	}
	if (!ok)
	{
		cJSON_Delete(input);
		json_oom();
	}
	body_append(body, input);
}

/* {"id": hubspot_id}, an input of batch/read */
void
hs_body_add_read(HsJsonBody *body, const char *hubspot_id)
{
	hs_body_add_archive(body, hubspot_id);
}

/*
 * "properties": [names...] beside "inputs" (batch/read), and the empty
 * "propertiesWithHistory" that HubSpot's schema requires there.
 */
void
hs_body_set_properties(HsJsonBody *body, int nnames, const char *const *names)
{
	cJSON	   *array;

	if (body == NULL || body->root == NULL)
		elog(ERROR, "erpcrm: request body used after hs_body_finish");
	if (cJSON_AddArrayToObject(body->root, "propertiesWithHistory") == NULL)
		json_oom();
	array = cJSON_AddArrayToObject(body->root, "properties");
	if (array == NULL)
		json_oom();
	for (int i = 0; i < nnames; i++)
	{
		cJSON	   *name = cJSON_CreateString(names[i] ? names[i] : "");

		if (name == NULL || !cJSON_AddItemToArray(array, name))
			json_oom();
	}
}

/*
 * The root of a search body with one filter group: {"filterGroups":
 * [{"filters":[]}]}; *filters is that array.
 */
static cJSON *
search_root(cJSON **filters)
{
	cJSON	   *root;
	cJSON	   *groups;
	cJSON	   *group;

	hs_json_setup();
	root = cJSON_CreateObject();
	if (root == NULL)
		json_oom();
	groups = cJSON_AddArrayToObject(root, "filterGroups");
	group = cJSON_CreateObject();
	if (groups == NULL || group == NULL || !cJSON_AddItemToArray(groups, group))
		json_oom();
	*filters = cJSON_AddArrayToObject(group, "filters");
	if (*filters == NULL)
		json_oom();
	return root;
}

/*
 * A CRM search for records whose property is one of values and which have
 * no without_property yet:
 * {"filterGroups":[{"filters":[{"propertyName":p,"operator":"IN","values":[..]},
 *   {"propertyName":w,"operator":"NOT_HAS_PROPERTY"}]}],"properties":[p,w],"limit":n}
 */
char *
hs_search_body(const char *property, int nvalues, const char *const *values,
			   const char *without_property, int limit)
{
	cJSON	   *root;
	cJSON	   *filters;
	cJSON	   *in;
	cJSON	   *vals;
	cJSON	   *props;
	char	   *text;

	root = search_root(&filters);
	in = cJSON_CreateObject();
	if (in == NULL || !cJSON_AddItemToArray(filters, in))
		json_oom();
	if (!add_string(in, "propertyName", property) ||
		!add_string(in, "operator", "IN"))
		json_oom();
	vals = cJSON_AddArrayToObject(in, "values");
	if (vals == NULL)
		json_oom();
	for (int i = 0; i < nvalues; i++)
	{
		cJSON	   *v = cJSON_CreateString(values[i] ? values[i] : "");

		if (v == NULL || !cJSON_AddItemToArray(vals, v))
			json_oom();
	}
	if (without_property != NULL)
	{
		cJSON	   *none = cJSON_CreateObject();

		if (none == NULL || !cJSON_AddItemToArray(filters, none) ||
			!add_string(none, "propertyName", without_property) ||
			!add_string(none, "operator", "NOT_HAS_PROPERTY"))
			json_oom();
	}
	props = cJSON_AddArrayToObject(root, "properties");
	if (props == NULL)
		json_oom();
	{
		cJSON	   *p1 = cJSON_CreateString(property);

		if (p1 == NULL || !cJSON_AddItemToArray(props, p1))
			json_oom();
	}
	if (cJSON_AddNumberToObject(root, "limit", limit) == NULL)
		json_oom();
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (text == NULL)
		json_oom();
	return text;
}

/* {"from":{"id":f},"to":[{"id":t}]}: an input of v4 batch/archive */
void
hs_body_add_association_archive(HsJsonBody *body, const char *from_id,
								const char *to_id)
{
	cJSON	   *input = cJSON_CreateObject();
	cJSON	   *from;
	cJSON	   *to;
	cJSON	   *one;

	if (input == NULL)
		json_oom();
	from = cJSON_AddObjectToObject(input, "from");
	to = from ? cJSON_AddArrayToObject(input, "to") : NULL;
	one = cJSON_CreateObject();
	if (from == NULL || to == NULL || one == NULL ||
		!cJSON_AddItemToArray(to, one) ||
		!add_string(from, "id", from_id) || !add_string(one, "id", to_id))
	{
		cJSON_Delete(input);
		json_oom();
	}
	body_append(body, input);
}

char *
hs_body_finish(HsJsonBody *body)
{
	char	   *text;

	hs_json_setup();
	if (body == NULL || body->root == NULL)
		elog(ERROR, "erpcrm: request body finished twice");
	text = cJSON_PrintUnformatted(body->root);
	cJSON_Delete(body->root);
	body->root = NULL;
	body->inputs = NULL;
	if (text == NULL)
		json_oom();
	/* the hooks are palloc: text is already in CurrentMemoryContext */
	return text;
}

/* ----------------------------------------------------------------
 * Parsing helpers
 * ----------------------------------------------------------------
 */

/*
 * pstrdup, replacing every byte that is not part of a well-formed UTF-8
 * sequence (overlong forms, surrogates and beyond U+10FFFF included) by '?'.
 */
static char *
utf8_pstrdup(const char *s)
{
	size_t		len = strlen(s);
	char	   *out = palloc(len + 1);
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = p[i];
		int			n;
		unsigned int cp;
		int			k;
		bool		ok = true;

		if (c < 0x80)
		{
			out[i] = (char) c;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
		{
			n = 2;
			cp = c & 0x1F;
		}
		else if (c >= 0xE0 && c <= 0xEF)
		{
			n = 3;
			cp = c & 0x0F;
		}
		else if (c >= 0xF0 && c <= 0xF4)
		{
			n = 4;
			cp = c & 0x07;
		}
		else
		{
			out[i++] = '?';
			continue;
		}
		if (i + n > len)
			ok = false;
		for (k = 1; ok && k < n; k++)
		{
			if ((p[i + k] & 0xC0) != 0x80)
				ok = false;
			else
				cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if (ok && ((n == 3 && cp < 0x800) ||
				   (n == 4 && cp < 0x10000) ||
				   cp > 0x10FFFF ||
				   (cp >= 0xD800 && cp <= 0xDFFF)))
			ok = false;
		if (!ok)
		{
			out[i++] = '?';
			continue;
		}
		memcpy(out + i, p + i, n);
		i += n;
	}
	out[len] = '\0';
	return out;
}

/*
 * A JSON number usable as an id or status: finite, integral, non-negative
 * and exactly representable in a double.
 */
static bool
number_as_integer(const cJSON *item, int64 *value)
{
	double		d;

	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || floor(d) != d)
		return false;
	*value = (int64) d;
	return true;
}

/*
 * An identifier: a string, or a number turned into its decimal text.
 * NULL when it is neither.
 */
static char *
id_text(const cJSON *item)
{
	int64		v;

	if (cJSON_IsString(item) && item->valuestring != NULL)
		return utf8_pstrdup(item->valuestring);
	if (number_as_integer(item, &v))
		return psprintf(INT64_FORMAT, v);
	return NULL;
}

/*
 * Optional string member: absent or null gives "" and true; a string gives
 * its copy and true; anything else gives false.
 */
static bool
opt_string(const cJSON *obj, const char *name, char **out)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);

	if (item == NULL || cJSON_IsNull(item))
	{
		*out = pstrdup("");
		return true;
	}
	if (cJSON_IsString(item) && item->valuestring != NULL)
	{
		*out = utf8_pstrdup(item->valuestring);
		return true;
	}
	*out = pstrdup("");
	return false;
}

/*
 * Collect identifiers from a "context" object: context.ids (array) or
 * context.id (array or single value), or for v4 associations
 * context.fromObjectId.  Strings and integral numbers are
 * accepted; false when an element is anything else.  Absent ids give zero.
 */
static bool
context_ids(const cJSON *context, int *nids, char ***ids)
{
	const cJSON *list;
	const cJSON *el;
	int			n;
	int			i = 0;

	*nids = 0;
	*ids = NULL;
	if (context == NULL || !cJSON_IsObject(context))
		return true;
	list = cJSON_GetObjectItemCaseSensitive(context, "ids");
	if (list == NULL || cJSON_IsNull(list))
		list = cJSON_GetObjectItemCaseSensitive(context, "id");
	/* v4 associations name the pair: the object it is made from counts */
	if (list == NULL || cJSON_IsNull(list))
		list = cJSON_GetObjectItemCaseSensitive(context, "fromObjectId");
	if (list == NULL || cJSON_IsNull(list))
		return true;

	if (!cJSON_IsArray(list))
	{
		char	   *one = id_text(list);

		if (one == NULL)
			return false;
		*ids = palloc(sizeof(char *));
		(*ids)[0] = one;
		*nids = 1;
		return true;
	}

	n = cJSON_GetArraySize(list);
	if (n == 0)
		return true;
	*ids = palloc(sizeof(char *) * n);
	cJSON_ArrayForEach(el, list)
	{
		char	   *t = id_text(el);

		if (t == NULL || i >= n)
			return false;
		(*ids)[i++] = t;
	}
	*nids = i;
	return true;
}

/* Numeric HTTP status for a HubSpot error category; 0 if unknown. */
static int
status_for_category(const char *category)
{
	static const struct
	{
		const char *category;
		int			status;
	}			map[] =
	{
		{"VALIDATION_ERROR", 400},
		{"INVALID_AUTHENTICATION", 401},
		{"MISSING_SCOPES", 403},
		{"OBJECT_NOT_FOUND", 404},
		{"CONFLICT", 409},
		{"OBJECT_ALREADY_EXISTS", 409},
	};
	int			i;

	for (i = 0; i < lengthof(map); i++)
	{
		if (strcmp(category, map[i].category) == 0)
			return map[i].status;
	}
	return 0;
}

/* A "status" member as a plausible HTTP status (number or digits), or 0. */
static int
numeric_status(const cJSON *item)
{
	int64		v;

	if (number_as_integer(item, &v))
		return (v >= 100 && v <= 599) ? (int) v : 0;
	if (cJSON_IsString(item) && item->valuestring != NULL)
	{
		const char *s = item->valuestring;

		if (strlen(s) == 3 &&
			s[0] >= '1' && s[0] <= '5' &&
			s[1] >= '0' && s[1] <= '9' &&
			s[2] >= '0' && s[2] <= '9')
			return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	}
	return 0;
}

/* Parse one entry of a batch answer's errors[]. */
static bool
parse_error_item(const cJSON *item, int index, HsErrorItem *out,
				 const char **why)
{
	const cJSON *nested;

	if (!cJSON_IsObject(item))
	{
		*why = psprintf("error %d is not an object", index + 1);
		return false;
	}
	if (!opt_string(item, "category", &out->category))
	{
		*why = psprintf("error %d has a \"category\" that is not a string",
						index + 1);
		return false;
	}
	if (!opt_string(item, "message", &out->message))
	{
		*why = psprintf("error %d has a \"message\" that is not a string",
						index + 1);
		return false;
	}
	if (!context_ids(cJSON_GetObjectItemCaseSensitive(item, "context"),
					 &out->nids, &out->ids))
	{
		*why = psprintf("error %d names an id that is neither a string nor an integer",
						index + 1);
		return false;
	}

	/* a status: the item's own, a nested error's, else from the category */
	out->status = numeric_status(cJSON_GetObjectItemCaseSensitive(item, "status"));
	nested = cJSON_GetObjectItemCaseSensitive(item, "errors");
	if (out->status == 0 && cJSON_IsArray(nested))
	{
		const cJSON *e;

		cJSON_ArrayForEach(e, nested)
		{
			if (cJSON_IsObject(e))
				out->status = numeric_status(cJSON_GetObjectItemCaseSensitive(e, "status"));
			if (out->status != 0)
				break;
		}
	}
	if (out->status == 0)
		out->status = status_for_category(out->category);
	return true;
}

/*
 * The two ids of an association result: {"from":{"id"},"to":{"id"}} (v4
 * batch/associate/default) or {"fromObjectId","toObjectId"} (v4 batch/create).
 * False when the result has neither shape.
 */
static bool
association_ids(const cJSON *result, char **from_id, char **to_id)
{
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(result, "from");
	const cJSON *to = cJSON_GetObjectItemCaseSensitive(result, "to");

	*from_id = *to_id = NULL;
	if (cJSON_IsObject(from) && cJSON_IsObject(to))
	{
		*from_id = id_text(cJSON_GetObjectItemCaseSensitive(from, "id"));
		*to_id = id_text(cJSON_GetObjectItemCaseSensitive(to, "id"));
	}
	else
	{
		*from_id = id_text(cJSON_GetObjectItemCaseSensitive(result, "fromObjectId"));
		*to_id = id_text(cJSON_GetObjectItemCaseSensitive(result, "toObjectId"));
	}
	return *from_id != NULL && *to_id != NULL;
}

/* Parse one entry of a batch answer's results[]. */
static bool
parse_result_item(const cJSON *item, int index, const char *key_property,
				  HsResultItem *out, const char **why)
{
	const cJSON *id;
	const cJSON *isnew;

	if (!cJSON_IsObject(item))
	{
		*why = psprintf("result %d is not an object", index + 1);
		return false;
	}

	id = cJSON_GetObjectItemCaseSensitive(item, "id");
	if (id != NULL && !cJSON_IsNull(id))
	{
		out->hubspot_id = id_text(id);
		if (out->hubspot_id == NULL)
		{
			*why = psprintf("result %d has an \"id\" that is neither a string nor an integer",
							index + 1);
			return false;
		}
	}
	else if (key_property == NULL)
	{
		char	   *from_id;
		char	   *to_id;

		/* association answers carry no "id": key them "from:to" */
		if (!association_ids(item, &from_id, &to_id))
		{
			*why = psprintf("result %d has no \"id\"", index + 1);
			return false;
		}
		out->hubspot_id = from_id;
		out->key = psprintf("%s:%s", from_id, to_id);
	}
	else
	{
		*why = psprintf("result %d has no \"id\"", index + 1);
		return false;
	}

	isnew = cJSON_GetObjectItemCaseSensitive(item, "new");
	if (isnew == NULL || cJSON_IsNull(isnew))
		out->is_new = false;
	else if (cJSON_IsBool(isnew))
		out->is_new = cJSON_IsTrue(isnew);
	else
	{
		*why = psprintf("result %d has a \"new\" that is not a boolean",
						index + 1);
		return false;
	}

	if (key_property != NULL)
	{
		const cJSON *props = cJSON_GetObjectItemCaseSensitive(item, "properties");
		const cJSON *key;

		key = cJSON_IsObject(props) ?
			cJSON_GetObjectItemCaseSensitive(props, key_property) : NULL;
		if (!cJSON_IsString(key) || key->valuestring == NULL)
		{
			*why = psprintf("result %d has no \"%s\" property", index + 1,
							key_property);
			return false;
		}
		out->key = utf8_pstrdup(key->valuestring);
	}
	else if (out->key == NULL)
		out->key = pstrdup(out->hubspot_id);
	return true;
}

/* ----------------------------------------------------------------
 * Parsing entry points
 * ----------------------------------------------------------------
 */

/*
 * Parse a 200/201/207 batch answer; see hubspot.h.  On failure out is left
 * empty (no results, no errors) and *why explains.
 */
bool
hs_parse_batch(const char *body, size_t len, const char *key_property,
			   HsBatchResult *out, const char **why)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *errors;
	const cJSON *item;
	int			n;
	int			i;
	bool		ok = true;

	hs_json_setup();
	memset(out, 0, sizeof(*out));
	*why = NULL;

	if (body == NULL || len == 0)
	{
		*why = "empty answer";
		return false;
	}
	root = cJSON_ParseWithLength(body, len);
	if (root == NULL)
	{
		*why = "answer is not JSON";
		return false;
	}
	if (!cJSON_IsObject(root))
	{
		*why = "answer is not a JSON object";
		cJSON_Delete(root);
		return false;
	}

	results = cJSON_GetObjectItemCaseSensitive(root, "results");
	errors = cJSON_GetObjectItemCaseSensitive(root, "errors");
	if (cJSON_IsNull(results))
		results = NULL;
	if (cJSON_IsNull(errors))
		errors = NULL;

	if (errors != NULL && !cJSON_IsArray(errors))
	{
		*why = "\"errors\" is not an array";
		ok = false;
	}
	else if (results == NULL && errors == NULL)
	{
		*why = "answer has neither \"results\" nor \"errors\"";
		ok = false;
	}
	else if (results != NULL && !cJSON_IsArray(results))
	{
		*why = "\"results\" is not an array";
		ok = false;
	}

	if (ok && results != NULL && (n = cJSON_GetArraySize(results)) > 0)
	{
		out->results = palloc0(sizeof(HsResultItem) * n);
		i = 0;
		cJSON_ArrayForEach(item, results)
		{
			if (i >= n ||
				!parse_result_item(item, i, key_property, &out->results[i], why))
			{
				if (*why == NULL)
					*why = "\"results\" changed size while read";
				ok = false;
				break;
			}
			i++;
		}
		out->nresults = i;
	}

	if (ok && errors != NULL && (n = cJSON_GetArraySize(errors)) > 0)
	{
		out->errors = palloc0(sizeof(HsErrorItem) * n);
		i = 0;
		cJSON_ArrayForEach(item, errors)
		{
			if (i >= n || !parse_error_item(item, i, &out->errors[i], why))
			{
				if (*why == NULL)
					*why = "\"errors\" changed size while read";
				ok = false;
				break;
			}
			i++;
		}
		out->nerrors = i;
	}

	cJSON_Delete(root);
	if (!ok)
		memset(out, 0, sizeof(*out));
	return ok;
}

/*
 * The JSON object of an answer, or NULL when the answer is empty, is not
 * JSON, or is not an object.  The caller frees it with cJSON_Delete().
 */
static cJSON *
parse_object(const char *body, size_t len)
{
	cJSON	   *root;

	if (body == NULL || len == 0)
		return NULL;
	root = cJSON_ParseWithLength(body, len);
	if (root != NULL && !cJSON_IsObject(root))
	{
		cJSON_Delete(root);
		root = NULL;
	}
	return root;
}

/*
 * Parse a HubSpot error body; see hubspot.h.  Fields of a wrong type are
 * treated as absent ("").  Returns false only when the body is not a JSON
 * object.
 */
bool
hs_parse_error(const char *body, size_t len, HsError *out)
{
	cJSON	   *root;
	const cJSON *errors;
	const cJSON *e;

	hs_json_setup();
	out->status = pstrdup("");
	out->message = pstrdup("");
	out->category = pstrdup("");
	out->sub_category = pstrdup("");
	out->correlation_id = pstrdup("");
	out->policy_name = pstrdup("");
	out->nids = 0;
	out->ids = NULL;

	root = parse_object(body, len);
	if (root == NULL)
		return false;

	(void) opt_string(root, "status", &out->status);
	(void) opt_string(root, "message", &out->message);
	(void) opt_string(root, "category", &out->category);
	if (out->category[0] == '\0')
		(void) opt_string(root, "errorType", &out->category);
	(void) opt_string(root, "subCategory", &out->sub_category);
	(void) opt_string(root, "correlationId", &out->correlation_id);
	(void) opt_string(root, "policyName", &out->policy_name);

	if (!context_ids(cJSON_GetObjectItemCaseSensitive(root, "context"),
					 &out->nids, &out->ids))
	{
		out->nids = 0;
		out->ids = NULL;
	}

	/* else the ids named by all of errors[] together */
	errors = cJSON_GetObjectItemCaseSensitive(root, "errors");
	if (out->nids == 0 && cJSON_IsArray(errors))
	{
		cJSON_ArrayForEach(e, errors)
		{
			int			n;
			char	  **ids;

			if (!cJSON_IsObject(e) ||
				!context_ids(cJSON_GetObjectItemCaseSensitive(e, "context"),
							 &n, &ids) ||
				n == 0)
				continue;
			if (out->nids == 0)
				out->ids = ids;
			else
			{
				out->ids = repalloc(out->ids,
									sizeof(char *) * (out->nids + n));
				memcpy(out->ids + out->nids, ids, sizeof(char *) * n);
			}
			out->nids += n;
		}
	}

	cJSON_Delete(root);
	return true;
}

/*
 * Parses an answer whose "results" is an array: returns the root (to be
 * freed with cJSON_Delete) and sets *results, or returns NULL for an empty
 * answer, one that is not JSON, not an object, or without such an array.
 */
static cJSON *
parse_results(const char *body, size_t len, const cJSON **results)
{
	cJSON	   *root;

	*results = NULL;
	root = parse_object(body, len);
	if (root == NULL)
		return NULL;
	*results = cJSON_GetObjectItemCaseSensitive(root, "results");
	if (!cJSON_IsArray(*results))
	{
		*results = NULL;
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

/*
 * The value of one property in each result of a batch/read or search answer:
 * ids[i] and values[i] (NULL when the property is absent or null).  Returns
 * false when the answer has no "results" array of objects with ids.
 */
bool
hs_parse_property(const char *body, size_t len, const char *property,
				  int *n, char ***ids, char ***values)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *item;
	int			count;
	int			i = 0;
	bool		ok = true;

	hs_json_setup();
	*n = 0;
	*ids = NULL;
	*values = NULL;
	root = parse_results(body, len, &results);
	if (root == NULL)
		return false;
	count = cJSON_GetArraySize(results);
	*ids = palloc0(sizeof(char *) * Max(count, 1));
	*values = palloc0(sizeof(char *) * Max(count, 1));
	cJSON_ArrayForEach(item, results)
	{
		const cJSON *props;
		const cJSON *v;
		char	   *id;

		if (!cJSON_IsObject(item) ||
			(id = id_text(cJSON_GetObjectItemCaseSensitive(item, "id"))) == NULL)
		{
			ok = false;
			break;
		}
		props = cJSON_GetObjectItemCaseSensitive(item, "properties");
		v = cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, property) : NULL;
		(*ids)[i] = id;
		(*values)[i] = (cJSON_IsString(v) && v->valuestring) ? utf8_pstrdup(v->valuestring) : NULL;
		i++;
	}
	cJSON_Delete(root);
	*n = ok ? i : 0;
	return ok;
}

/* ----------------------------------------------------------------
 * Portal set-up: properties, groups, pipelines
 * ----------------------------------------------------------------
 */
static char *
finish_object(cJSON *root)
{
	char	   *text = cJSON_PrintUnformatted(root);

	cJSON_Delete(root);
	if (text == NULL)
		json_oom();
	return text;
}

/* POST /crm/v3/properties/{type}/groups */
char *
hs_group_body(const char *name, const char *label)
{
	cJSON	   *root;

	hs_json_setup();
	root = cJSON_CreateObject();
	if (root == NULL || !add_string(root, "name", name) ||
		!add_string(root, "label", label) ||
		cJSON_AddNumberToObject(root, "displayOrder", -1) == NULL)
		json_oom();
	return finish_object(root);
}

/* POST /crm/v3/properties/{type} */
char *
hs_property_body(const char *name, const char *label, const char *type,
				 const char *field_type, const char *group, bool unique)
{
	cJSON	   *root;

	hs_json_setup();
	root = cJSON_CreateObject();
	if (root == NULL || !add_string(root, "name", name) ||
		!add_string(root, "label", label) ||
		!add_string(root, "type", type) ||
		!add_string(root, "fieldType", field_type) ||
		!add_string(root, "groupName", group))
		json_oom();
	if (unique && cJSON_AddTrueToObject(root, "hasUniqueValue") == NULL)
		json_oom();
	return finish_object(root);
}

/*
 * POST /crm/v3/pipelines/{type}: deal stages with their win probability;
 * with probabilities NULL (orders), stages with empty metadata.
 */
char *
hs_pipeline_body(const char *label, int nstages, const char *const *stages,
				 const char *const *probabilities)
{
	cJSON	   *root;
	cJSON	   *array;

	hs_json_setup();
	root = cJSON_CreateObject();
	if (root == NULL || !add_string(root, "label", label) ||
		cJSON_AddNumberToObject(root, "displayOrder", 99) == NULL)
		json_oom();
	array = cJSON_AddArrayToObject(root, "stages");
	if (array == NULL)
		json_oom();
	for (int i = 0; i < nstages; i++)
	{
		cJSON	   *stage = cJSON_CreateObject();
		cJSON	   *meta;

		if (stage == NULL || !cJSON_AddItemToArray(array, stage) ||
			!add_string(stage, "label", stages[i]) ||
			cJSON_AddNumberToObject(stage, "displayOrder", i) == NULL)
			json_oom();
		meta = cJSON_AddObjectToObject(stage, "metadata");
		if (meta == NULL ||
			(probabilities != NULL && !add_string(meta, "probability", probabilities[i])))
			json_oom();
	}
	return finish_object(root);
}

/* results[*][field] as strings (the names of GET /crm/v3/properties). */
bool
hs_parse_names(const char *body, size_t len, const char *field,
			   int *n, char ***names)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *item;
	int			i = 0;

	hs_json_setup();
	*n = 0;
	*names = NULL;
	root = parse_results(body, len, &results);
	if (root == NULL)
		return false;
	*names = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(results), 1));
	cJSON_ArrayForEach(item, results)
	{
		const cJSON *v = cJSON_IsObject(item) ?
		cJSON_GetObjectItemCaseSensitive(item, field) : NULL;

		if (cJSON_IsString(v) && v->valuestring != NULL)
			(*names)[i++] = utf8_pstrdup(v->valuestring);
	}
	cJSON_Delete(root);
	*n = i;
	return true;
}

/*
 * A pipeline (the one labelled label) from GET /crm/v3/pipelines/deals
 * (results[]) or from the answer to its creation (the object itself).
 * Returns false when not found; *id and the stages' labels and ids else.
 */
bool
hs_parse_pipeline(const char *body, size_t len, const char *label,
				  char **id, int *nstages, char ***stage_labels,
				  char ***stage_ids)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *item;
	const cJSON *found = NULL;
	bool		ok = false;

	hs_json_setup();
	*id = NULL;
	*nstages = 0;
	root = parse_object(body, len);
	if (root == NULL)
		return false;
	results = cJSON_GetObjectItemCaseSensitive(root, "results");
	if (cJSON_IsArray(results))
	{
		cJSON_ArrayForEach(item, results)
		{
			const cJSON *l = cJSON_IsObject(item) ?
			cJSON_GetObjectItemCaseSensitive(item, "label") : NULL;

			if (cJSON_IsString(l) && l->valuestring && strcmp(l->valuestring, label) == 0)
			{
				found = item;
				break;
			}
		}
	}
	else if (cJSON_IsObject(root))
		found = root;

	if (found != NULL)
	{
		const cJSON *stages = cJSON_GetObjectItemCaseSensitive(found, "stages");
		const cJSON *stage;
		int			i = 0;

		*id = id_text(cJSON_GetObjectItemCaseSensitive(found, "id"));
		if (*id != NULL && cJSON_IsArray(stages))
		{
			*stage_labels = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(stages), 1));
			*stage_ids = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(stages), 1));
			cJSON_ArrayForEach(stage, stages)
			{
				const cJSON *l = cJSON_IsObject(stage) ?
				cJSON_GetObjectItemCaseSensitive(stage, "label") : NULL;
				char	   *sid = cJSON_IsObject(stage) ?
				id_text(cJSON_GetObjectItemCaseSensitive(stage, "id")) : NULL;

				if (!cJSON_IsString(l) || l->valuestring == NULL || sid == NULL)
					continue;
				(*stage_labels)[i] = utf8_pstrdup(l->valuestring);
				(*stage_ids)[i] = sid;
				i++;
			}
			*nstages = i;
			ok = true;
		}
	}
	cJSON_Delete(root);
	return ok;
}

/*
 * Top-level scalar fields of an object answer, as text (numbers in decimal,
 * booleans as true/false); values[i] is NULL where field i is absent.
 */
bool
hs_parse_fields(const char *body, size_t len, int nfields,
				const char *const *fields, char **values)
{
	cJSON	   *root;

	hs_json_setup();
	for (int i = 0; i < nfields; i++)
		values[i] = NULL;
	root = parse_object(body, len);
	if (root == NULL)
		return false;
	for (int i = 0; i < nfields; i++)
	{
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, fields[i]);

		if (cJSON_IsString(v) && v->valuestring != NULL)
			values[i] = utf8_pstrdup(v->valuestring);
		else if (cJSON_IsBool(v))
			values[i] = pstrdup(cJSON_IsTrue(v) ? "true" : "false");
		else if (cJSON_IsNumber(v))
			values[i] = id_text(v) ? id_text(v) : psprintf("%g", v->valuedouble);
	}
	cJSON_Delete(root);
	return true;
}

/* A top-level array of strings (the "scopes" of a token). */
bool
hs_parse_string_list(const char *body, size_t len, const char *field,
					 int *n, char ***values)
{
	cJSON	   *root;
	const cJSON *array;
	const cJSON *item;
	int			i = 0;

	hs_json_setup();
	*n = 0;
	*values = NULL;
	root = parse_object(body, len);
	if (root == NULL)
		return false;
	array = cJSON_GetObjectItemCaseSensitive(root, field);
	if (!cJSON_IsArray(array))
	{
		cJSON_Delete(root);
		return false;
	}
	*values = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(array), 1));
	cJSON_ArrayForEach(item, array)
	{
		if (cJSON_IsString(item) && item->valuestring != NULL)
			(*values)[i++] = utf8_pstrdup(item->valuestring);
	}
	cJSON_Delete(root);
	*n = i;
	return true;
}

/* {"tokenKey": token}: the body of the access token info call */
char *
hs_token_info_body(const char *token)
{
	cJSON	   *root;

	hs_json_setup();
	root = cJSON_CreateObject();
	if (root == NULL || !add_string(root, "tokenKey", token))
		json_oom();
	return finish_object(root);
}

/*
 * The limit and usage of one HubSpot-defined object type's pipelines, from
 * GET /crm/v3/limits/pipelines (hubspotDefinedObjectTypes[]).  False when
 * the answer does not say.
 */
bool
hs_parse_pipeline_limit(const char *body, size_t len, const char *object_type_id,
						long *limit, long *usage)
{
	cJSON	   *root;
	const cJSON *types;
	const cJSON *item;
	bool		found = false;

	hs_json_setup();
	*limit = *usage = -1;
	root = parse_object(body, len);
	if (root == NULL)
		return false;
	types = cJSON_GetObjectItemCaseSensitive(root, "hubspotDefinedObjectTypes");
	if (cJSON_IsArray(types))
	{
		cJSON_ArrayForEach(item, types)
		{
			const cJSON *id = cJSON_IsObject(item) ?
			cJSON_GetObjectItemCaseSensitive(item, "objectTypeId") : NULL;
			const cJSON *l;
			const cJSON *u;

			if (!cJSON_IsString(id) || id->valuestring == NULL ||
				strcmp(id->valuestring, object_type_id) != 0)
				continue;
			l = cJSON_GetObjectItemCaseSensitive(item, "limit");
			u = cJSON_GetObjectItemCaseSensitive(item, "usage");
			if (cJSON_IsNumber(l) && cJSON_IsNumber(u))
			{
				*limit = (long) l->valuedouble;
				*usage = (long) u->valuedouble;
				found = true;
			}
			break;
		}
	}
	cJSON_Delete(root);
	return found;
}

/*
 * One page of GET /crm/v3/owners: per owner its id, e-mail (NULL when it
 * has none) and archived flag; *after is paging.next.after, or NULL on the
 * last page.
 */
bool
hs_parse_owners(const char *body, size_t len, int *n, char ***ids,
				char ***emails, bool **archived, char **after)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *item;
	const cJSON *paging;
	int			i = 0;

	hs_json_setup();
	*n = 0;
	*after = NULL;
	root = parse_results(body, len, &results);
	if (root == NULL)
		return false;
	*ids = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(results), 1));
	*emails = palloc0(sizeof(char *) * Max(cJSON_GetArraySize(results), 1));
	*archived = palloc0(sizeof(bool) * Max(cJSON_GetArraySize(results), 1));
	cJSON_ArrayForEach(item, results)
	{
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
		const cJSON *email = cJSON_GetObjectItemCaseSensitive(item, "email");
		const cJSON *arch = cJSON_GetObjectItemCaseSensitive(item, "archived");

		if (!cJSON_IsString(id) || id->valuestring == NULL)
			continue;
		(*ids)[i] = utf8_pstrdup(id->valuestring);
		(*emails)[i] = cJSON_IsString(email) && email->valuestring != NULL ?
			utf8_pstrdup(email->valuestring) : NULL;
		(*archived)[i] = cJSON_IsTrue(arch);
		i++;
	}
	paging = cJSON_GetObjectItemCaseSensitive(root, "paging");
	if (cJSON_IsObject(paging))
	{
		const cJSON *next = cJSON_GetObjectItemCaseSensitive(paging, "next");
		const cJSON *a = cJSON_IsObject(next) ?
			cJSON_GetObjectItemCaseSensitive(next, "after") : NULL;

		if (cJSON_IsString(a) && a->valuestring != NULL && a->valuestring[0] != '\0')
			*after = utf8_pstrdup(a->valuestring);
	}
	cJSON_Delete(root);
	*n = i;
	return true;
}

/* ----------------------------------------------------------------
 * Reading back: associations, and every record
 * that carries the id property
 * ----------------------------------------------------------------
 */

/*
 * The pairs of a v4 associations batch/read answer:
 * {"results":[{"from":{"id":f},"to":[{"toObjectId":t,...},...]},...]}.
 * Inputs with no association are in errors[] and give no pair.  False when
 * the answer has no "results" array.
 */
bool
hs_parse_association_reads(const char *body, size_t len, int *n,
						   char ***from_ids, char ***to_ids)
{
	cJSON	   *root;
	const cJSON *results;
	const cJSON *item;
	int			cap = 16;
	int			i = 0;

	hs_json_setup();
	*n = 0;
	root = parse_results(body, len, &results);
	if (root == NULL)
		return false;
	*from_ids = palloc(sizeof(char *) * cap);
	*to_ids = palloc(sizeof(char *) * cap);
	cJSON_ArrayForEach(item, results)
	{
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(item, "from");
		const cJSON *to = cJSON_GetObjectItemCaseSensitive(item, "to");
		const cJSON *one;
		char	   *from_id;

		if (!cJSON_IsObject(from) || !cJSON_IsArray(to) ||
			(from_id = id_text(cJSON_GetObjectItemCaseSensitive(from, "id"))) == NULL)
			continue;
		cJSON_ArrayForEach(one, to)
		{
			char	   *to_id = cJSON_IsObject(one) ?
				id_text(cJSON_GetObjectItemCaseSensitive(one, "toObjectId")) : NULL;

			if (to_id == NULL)
				continue;
			if (i == cap)
			{
				cap *= 2;
				*from_ids = repalloc(*from_ids, sizeof(char *) * cap);
				*to_ids = repalloc(*to_ids, sizeof(char *) * cap);
			}
			(*from_ids)[i] = from_id;
			(*to_ids)[i] = to_id;
			i++;
		}
	}
	cJSON_Delete(root);
	*n = i;
	return true;
}

/*
 * A search for every record that has property, with a HubSpot id above
 * after_id, in the order of their ids:
 * {"filterGroups":[{"filters":[{"propertyName":p,"operator":"HAS_PROPERTY"},
 *   {"propertyName":"hs_object_id","operator":"GT","value":after}]}],
 *  "sorts":["hs_object_id"],
 *  "properties":[p],"limit":n}
 * Paging by the id, not by "after", goes past HubSpot's 10,000 results.
 */
char *
hs_search_having_body(const char *property, const char *after_id, int limit)
{
	cJSON	   *root;
	cJSON	   *filters;
	cJSON	   *has;
	cJSON	   *gt;
	cJSON	   *sorts;
	cJSON	   *sort;
	cJSON	   *props;
	cJSON	   *p1;
	char	   *text;

	root = search_root(&filters);
	has = cJSON_CreateObject();
	gt = cJSON_CreateObject();
	if (has == NULL || gt == NULL ||
		!cJSON_AddItemToArray(filters, has) || !cJSON_AddItemToArray(filters, gt) ||
		!add_string(has, "propertyName", property) ||
		!add_string(has, "operator", "HAS_PROPERTY") ||
		!add_string(gt, "propertyName", "hs_object_id") ||
		!add_string(gt, "operator", "GT") ||
		!add_string(gt, "value", after_id))
		json_oom();
	/* a property name sorts ascending ("-name" descending) */
	sorts = cJSON_AddArrayToObject(root, "sorts");
	sort = cJSON_CreateString("hs_object_id");
	if (sorts == NULL || sort == NULL || !cJSON_AddItemToArray(sorts, sort))
		json_oom();
	props = cJSON_AddArrayToObject(root, "properties");
	p1 = cJSON_CreateString(property);
	if (props == NULL || p1 == NULL || !cJSON_AddItemToArray(props, p1))
		json_oom();
	if (cJSON_AddNumberToObject(root, "limit", limit) == NULL)
		json_oom();
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (text == NULL)
		json_oom();
	return text;
}

/* "idProperty": name beside "inputs": a batch/read by that unique property */
void
hs_body_set_id_property(HsJsonBody *body, const char *name)
{
	if (body == NULL || body->root == NULL)
		elog(ERROR, "erpcrm: request body used after hs_body_finish");
	if (!add_string(body->root, "idProperty", name))
		json_oom();
}

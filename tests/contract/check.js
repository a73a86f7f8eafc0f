#!/usr/bin/env node
/*
 * check.js: erpcrm's HubSpot traffic against HubSpot's own API contract.
 *
 * HubSpot's official Node client (npm @hubspot/api-client, pinned in
 * package-lock.json) is generated from HubSpot's OpenAPI specifications.
 * Each of its API classes names, per path and method, the model of the
 * request body and the model of the answer per HTTP status; each model
 * lists its fields (attributeTypeMap) and which of them are required (its
 * .d.ts).  This script reads those from the installed package, then checks
 * traffic the HubSpot mock recorded (GET /_mock/requests with log_bodies):
 *
 *   - every request body erpcrm sent, against the request model;
 *   - every answer the mock gave, against the answer model of its status.
 *
 * A field of the wrong type, an unknown field, a missing required field, a
 * value outside an enumeration, a status the client does not expect for a
 * path, or a path the client does not know fails the check.  The few calls
 * the client has no model for are listed apart (UNMODELLED below) and
 * counted, not checked.
 *
 *   node check.js [--quiet] LOG.json...
 *
 * Each LOG.json is the mock's answer to GET /_mock/requests.  Exit status 0
 * when everything conforms, 1 when something does not, 2 on a usage error.
 */
'use strict';

const fs = require('fs');
const path = require('path');

/* Calls erpcrm makes that the client has no API class for. */
const UNMODELLED = [
	['GET', '/account-info/v3/details', 'account details (time zone, portal id): not in the Node client'],
	['POST', '/oauth/v2/private-apps/get/access-token-info', 'token introspection: not in the Node client'],
	['GET', '/crm/v3/limits/pipelines', 'pipeline limits: not in the Node client'],
];

/*
 * HubSpot's error bodies carry fields the client's Error model lacks (see
 * ../shared/HUBSPOT.md, "Errors" and "Rate limits"): they are allowed in
 * error answers only.
 */
const ERROR_EXTRA = new Set(['status', 'errorType', 'policyName', 'requestId']);

/*
 * A 429 is not the client's Error model: HubSpot answers it with a body of
 * its own, which has no category (as integrators quote it; the mock answers
 * the same): these fields, the first five always.
 */
const RATE_LIMIT_REQUIRED = ['status', 'message', 'errorType', 'correlationId', 'policyName'];
const RATE_LIMIT_OPTIONAL = new Set(['groupName', 'requestId', 'category']);

function checkRateLimitBody(v, errs)
{
	if (kind(v) !== 'object')
		return errs.push(`answer 429: expected an object, got ${kind(v)}`);
	for (const k of RATE_LIMIT_REQUIRED)
		if (typeof v[k] !== 'string')
			errs.push(`answer 429: ${k} missing or not a string`);
	for (const k of Object.keys(v))
		if (!RATE_LIMIT_REQUIRED.includes(k) && !RATE_LIMIT_OPTIONAL.has(k))
			errs.push(`answer 429: unknown field ${k}`);
	return errs;
}

function clientRoot()
{
	const pkg = require.resolve('@hubspot/api-client/package.json', { paths: [__dirname] });
	return path.dirname(pkg);
}

function walk(dir, out)
{
	for (const e of fs.readdirSync(dir, { withFileTypes: true }))
	{
		const p = path.join(dir, e.name);
		if (e.isDirectory())
			walk(p, out);
		else if (/\/apis\/\w+Api\.js$/.test(p))
			out.push(p);
	}
	return out;
}

/* The text of each method of class `cls` in `src`: name -> body. */
function methods(src, cls)
{
	const start = src.search(new RegExp('\nclass ' + cls + '[ {]'));
	if (start < 0)
		return {};
	const end = src.indexOf('\nexports.' + cls + ' =', start);
	const body = src.slice(start, end < 0 ? undefined : end);
	const re = /\n {4}(\w+)\(([^)]*)\) \{\n/g;
	const found = [];
	let m;
	while ((m = re.exec(body)) !== null)
		found.push({ name: m[1], at: m.index });
	const out = {};
	found.forEach((f, i) => {
		out[f.name] = body.slice(f.at, i + 1 < found.length ? found[i + 1].at : undefined);
	});
	return out;
}

/* Every endpoint of the client: method, template, models, types. */
function loadEndpoints()
{
	const root = path.join(clientRoot(), 'lib', 'codegen');
	const endpoints = [];
	for (const file of walk(root, []))
	{
		const src = fs.readFileSync(file, 'utf8');
		const cls = path.basename(file, '.js');
		const requests = methods(src, cls + 'RequestFactory');
		const answers = methods(src, cls + 'ResponseProcessor');
		const modelsDir = path.join(path.dirname(path.dirname(file)), 'models');
		for (const [name, text] of Object.entries(requests))
		{
			const p = /localVarPath = '([^']+)'/.exec(text);
			const verb = /HttpMethod\.(\w+)/.exec(text);
			if (!p || !verb)
				continue;
			const body = /stringify\(ObjectSerializer_1\.ObjectSerializer\.serialize\(\w+, "([^"]+)"/.exec(text);
			const statuses = {};
			const answer = answers[name + 'WithHttpInfo'] || '';
			const parts = answer.split('isCodeInRange)("').slice(1);
			for (const part of parts)
			{
				const code = part.slice(0, part.indexOf('"'));
				const t = /deserialize\(ObjectSerializer_1\.ObjectSerializer\.parse\([^;]*?, "([^"]+)", ""\)/.exec(part);
				if (!(code in statuses))
					statuses[code] = t ? t[1] : 'void';
			}
			const template = p[1];
			const holes = (template.match(/\{[^}]+\}/g) || []).length;
			const rx = new RegExp('^' + template.split(/\{[^}]+\}/).map(s => s.replace(/[.*+?^$()|[\]\\]/g, '\\$&')).join('[^/]+') + '/?$');
			endpoints.push({
				method: verb[1].toUpperCase(), template, rx, holes, modelsDir,
				where: path.relative(root, file) + ' ' + name,
				request: body ? body[1] : null, statuses,
			});
		}
	}
	return endpoints;
}

/* ---- models ---------------------------------------------------------- */

const modelSets = new Map();

function models(dir)
{
	if (!modelSets.has(dir))
		modelSets.set(dir, { all: require(path.join(dir, 'all.js')), dir, required: new Map() });
	return modelSets.get(dir);
}

/* Required attribute names of a model, from its declaration file. */
function required(set, name)
{
	if (!set.required.has(name))
	{
		const req = new Set();
		const file = path.join(set.dir, name + '.d.ts');
		if (fs.existsSync(file))
		{
			const src = fs.readFileSync(file, 'utf8');
			const cls = src.slice(src.indexOf('export declare class ' + name));
			const re = /\n {4}'([^']+)'(\??): /g;
			let m;
			while ((m = re.exec(cls)) !== null && m.index < cls.indexOf('static readonly'))
				if (m[2] === '')
					req.add(m[1]);
		}
		set.required.set(name, req);
	}
	return set.required.get(name);
}

function kind(v)
{
	if (v === null)
		return 'null';
	if (Array.isArray(v))
		return 'array';
	return typeof v;
}

/* Top-level split of a type on `sep` (outside <> and {}). */
function splitTop(t, sep)
{
	const out = [];
	let depth = 0, last = 0;
	for (let i = 0; i < t.length; i++)
	{
		const c = t[i];
		if (c === '<' || c === '{')
			depth++;
		else if (c === '>' || c === '}')
			depth--;
		else if (depth === 0 && t.startsWith(sep, i))
		{
			out.push(t.slice(last, i).trim());
			last = i + sep.length;
		}
	}
	out.push(t.slice(last).trim());
	return out;
}

const ISO_DATE = /^\d{4}-\d\d-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?$/;

/*
 * Check value v against type t of model set `set`; push what is wrong to
 * `errs` as "where: what".  `extra` is a set of field names allowed beyond
 * the model's own at the top level.
 */
function check(set, t, v, where, errs, extra)
{
	t = t.trim();
	const alts = splitTop(t, '|');
	if (alts.length > 1)
	{
		if (v === null && alts.includes('null'))
			return;
		const nonNull = alts.filter(a => a !== 'null');
		let best = null;
		for (const a of nonNull)
		{
			const e = [];
			check(set, a, v, where, e, extra);
			if (e.length === 0)
				return;
			if (best === null || e.length < best.length)
				best = e;
		}
		errs.push(...best);
		return;
	}
	let m;
	if ((m = /^Array<(.*)>$/.exec(t)))
	{
		if (!Array.isArray(v))
			return errs.push(`${where}: expected an array (${t}), got ${kind(v)}`);
		v.forEach((x, i) => check(set, m[1], x, `${where}[${i}]`, errs));
		return;
	}
	if ((m = /^\{ \[key: string\]: (.*); \}$/.exec(t)))
	{
		if (kind(v) !== 'object')
			return errs.push(`${where}: expected an object (${t}), got ${kind(v)}`);
		for (const [k, x] of Object.entries(v))
			check(set, m[1], x, `${where}.${k}`, errs);
		return;
	}
	switch (t)
	{
		case 'any':
			return;
		case 'object':
			if (kind(v) !== 'object')
				errs.push(`${where}: expected an object, got ${kind(v)}`);
			return;
		case 'string':
			if (typeof v !== 'string')
				errs.push(`${where}: expected a string, got ${kind(v)} ${JSON.stringify(v)}`);
			return;
		case 'number':
			if (typeof v !== 'number')
				errs.push(`${where}: expected a number, got ${kind(v)} ${JSON.stringify(v)}`);
			return;
		case 'boolean':
			if (typeof v !== 'boolean')
				errs.push(`${where}: expected a boolean, got ${kind(v)} ${JSON.stringify(v)}`);
			return;
		case 'Date':
			if (typeof v !== 'string' || !ISO_DATE.test(v) || isNaN(Date.parse(v)))
				errs.push(`${where}: expected an ISO 8601 date-time string, got ${JSON.stringify(v)}`);
			return;
	}
	const name = t === 'Error' ? 'ModelError' : t;
	const def = set.all[name];
	if (def === undefined)
		return errs.push(`${where}: type ${t} is unknown to the client (checker bug)`);
	if (typeof def !== 'function')
	{
		/* an enumeration: an object of name -> value */
		const values = Object.values(def);
		if (!values.includes(v))
			errs.push(`${where}: ${JSON.stringify(v)} is not one of ${name} (${values.join(', ')})`);
		return;
	}
	if (kind(v) !== 'object')
		return errs.push(`${where}: expected a ${name} object, got ${kind(v)} ${JSON.stringify(v)}`);
	const attrs = def.getAttributeTypeMap();
	const byBase = new Map(attrs.map(a => [a.baseName, a]));
	for (const [k, x] of Object.entries(v))
	{
		const a = byBase.get(k);
		if (!a)
		{
			if (!(extra && extra.has(k)))
				errs.push(`${where}.${k}: unknown field of ${name} (it has ${attrs.map(a => a.baseName).join(', ')})`);
			continue;
		}
		check(set, a.type, x, `${where}.${k}`, errs);
	}
	for (const attr of required(set, name))
	{
		const a = attrs.find(x => x.name === attr);
		if (a && !(a.baseName in v))
			errs.push(`${where}: required field ${a.baseName} of ${name} missing`);
	}
}

/* ---- traffic ------------------------------------------------------------ */

/*
 * HubSpot's date-versioned families (/crm/objects/2026-03/..., see
 * ../shared/HUBSPOT.md, "Versions") take and give what their /crm/v3 and
 * /crm/v4 twins do; the client knows only the twins, so a date-versioned
 * call is checked as its twin.  Returns [path, version or null].
 */
const DATEVER_FAMILIES = { objects: 'v3', properties: 'v3', pipelines: 'v3', owners: 'v3', associations: 'v4' };

function undated(p)
{
	const m = /^\/crm\/([a-z]+)\/(\d{4}-\d{2})(\/.*)?$/.exec(p);
	if (!m || !(m[1] in DATEVER_FAMILIES))
		return [p, null];
	let ver = DATEVER_FAMILIES[m[1]];
	const rest = m[3] || '';
	/* /crm/objects/{v}/{type}/{id}/associations/... is a v4 call */
	if (m[1] === 'objects' && /^\/[^/]+\/[^/]+\/associations(\/|$)/.test(rest))
		ver = 'v4';
	return [`/crm/${ver}/${m[1]}${rest}`, m[2]];
}

/*
 * The endpoints a call may be: those of its path with the fewest
 * placeholders (the client has, say, both /crm/v3/objects/{objectType}/...
 * and /crm/v3/objects/companies/...), and the most general template, which
 * names the call in the summary.
 */
function candidates(endpoints, method, p)
{
	const hits = endpoints.filter(e => e.method === method && e.rx.test(p));
	if (hits.length === 0)
		return { hits, name: null };
	const fewest = Math.min(...hits.map(e => e.holes));
	const most = Math.max(...hits.map(e => e.holes));
	return {
		hits: hits.filter(e => e.holes === fewest),
		name: hits.find(e => e.holes === most).template,
	};
}

/* Problems of one recorded exchange against one endpoint. */
function checkExchange(e, x)
{
	const errs = [];
	const set = models(e.modelsDir);
	const hasBody = x.body !== undefined && x.body !== null && x.body !== '';
	if (typeof x.body === 'string' && hasBody)
	{
		/* the mock keeps the raw text of a call it did not parse (down) */
		try
		{
			x = Object.assign({}, x, { body: JSON.parse(x.body) });
		}
		catch (err)
		{
			/* reported below as not JSON */
		}
	}
	if (e.request)
	{
		if (!hasBody)
			errs.push(`request: no body, the client sends ${e.request}`);
		else if (typeof x.body === 'string')
			errs.push(`request: not JSON: ${x.body.slice(0, 80)}`);
		else
			check(set, e.request, x.body, 'request', errs);
	}
	else if (hasBody)
		errs.push('request: a body where the client sends none');

	if (x.status === 0 || x.fault)
		return errs;			/* no answer, or one garbled on purpose */
	const code = String(x.status);
	if (x.status === 429 && x.answer !== undefined)
		return checkRateLimitBody(x.answer, errs);
	let t = e.statuses[code];
	const isError = x.status >= 300;
	if (t === undefined)
	{
		if (!isError)
		{
			errs.push(`answer: status ${code} is not among the client's (${Object.keys(e.statuses).join(', ')})`);
			return errs;
		}
		t = e.statuses['0'] || 'Error';
	}
	if (t === 'void')
	{
		if (x.answer !== undefined && x.answer !== null && x.status !== 204)
			errs.push(`answer ${code}: a body where the client expects none`);
		return errs;
	}
	if (x.answer === undefined)
	{
		errs.push(`answer ${code}: not recorded (log_bodies off?)`);
		return errs;
	}
	check(set, t, x.answer, `answer ${code}`, errs, isError ? ERROR_EXTRA : undefined);
	return errs;
}

function main(argv)
{
	const quiet = argv[0] === '--quiet';
	const files = quiet ? argv.slice(1) : argv;
	if (files.length === 0)
	{
		process.stderr.write('usage: node check.js [--quiet] LOG.json...\n');
		return 2;
	}
	const endpoints = loadEndpoints();
	const version = require(path.join(clientRoot(), 'package.json')).version;
	const seen = new Map();		/* key -> {method, template, request, n, statuses} */
	const unmodelled = new Map();
	const versions = new Map();	/* date version -> calls checked as twins */
	const problems = [];
	let exchanges = 0;
	for (const f of files)
	{
		const log = JSON.parse(fs.readFileSync(f, 'utf8'));
		for (const x of log.results || log)
		{
			if (x.path.startsWith('/_mock'))
				continue;
			exchanges++;
			const called = x.path.replace(/\?.*/, '');
			const [p, datever] = undated(called);
			if (datever)
				versions.set(datever, (versions.get(datever) || 0) + 1);
			const skip = UNMODELLED.find(([m, q]) => m === x.method && q === p);
			if (skip)
			{
				unmodelled.set(`${x.method} ${p}`, (unmodelled.get(`${x.method} ${p}`) || 0) + 1);
				continue;
			}
			const { hits: cands, name } = candidates(endpoints, x.method, p);
			const where = `${path.basename(f)} #${x.seq} ${x.method} ${called} -> ${x.status}`;
			if (cands.length === 0)
			{
				problems.push(`${where}: no such endpoint in HubSpot's client`);
				continue;
			}
			let errs = null;
			let used = cands[0];
			for (const c of cands)
			{
				const e = checkExchange(c, x);
				if (errs === null || e.length < errs.length)
				{
					errs = e;
					used = c;
				}
				if (e.length === 0)
					break;
			}
			const key = `${used.method} ${name}`;
			if (!seen.has(key))
				seen.set(key, { request: used.request, n: 0, statuses: new Map() });
			const s = seen.get(key);
			s.n++;
			s.statuses.set(x.status, (s.statuses.get(x.status) || 0) + 1);
			for (const e of errs.slice(0, 5))
				problems.push(`${where}: ${e}`);
			if (errs.length > 5)
				problems.push(`${where}: ... and ${errs.length - 5} more`);
		}
	}
	console.log(`HubSpot contract (@hubspot/api-client ${version}): ${exchanges} calls in ${files.length} log(s)`);
	if (!quiet)
	{
		for (const [key, s] of [...seen.entries()].sort())
		{
			const st = [...s.statuses.entries()].sort((a, b) => a[0] - b[0]).map(([c, n]) => `${c} x${n}`).join(', ');
			console.log(`  ${key}: ${s.n} (${s.request || 'no body'}; answers ${st})`);
		}
		for (const [key, n] of [...unmodelled.entries()].sort())
			console.log(`  ${key}: ${n}, not checked: ${UNMODELLED.find(u => key === `${u[0]} ${u[1]}`)[2]}`);
		for (const [v, n] of [...versions.entries()].sort())
			console.log(`  date-versioned ${v}: ${n} call(s), checked as their /crm/v3 and /crm/v4 twins`);
	}
	for (const p of problems)
		console.log('CONTRACT: ' + p);
	const checked = exchanges - [...unmodelled.values()].reduce((a, b) => a + b, 0);
	const bad = new Set(problems.map(p => p.split(': ')[0])).size;
	console.log(`${checked - bad} of ${checked} checked calls conform, ${bad} do not`);
	return problems.length ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));

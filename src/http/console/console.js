// warden's admin console: plain JavaScript, no build step, no other site.
// It signs in like any client (an access token asked for with
// scope=admin, or a support user's token), keeps that token in this tab's
// sessionStorage only, and calls warden's own JSON API with it. Pages are
// built with DOM calls (textContent), never from HTML strings.
'use strict';

const TOKEN_KEY = 'warden.console.token';
const ROLE_KEY = 'warden.console.role';
const LIVE_EVERY_MS = 5000;
let liveTimer = null;

// ---- session ---------------------------------------------------------

const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get role() { return sessionStorage.getItem(ROLE_KEY); },
  get canChange() { return this.role === 'admin'; },
  set(token, role) { sessionStorage.setItem(TOKEN_KEY, token); sessionStorage.setItem(ROLE_KEY, role); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(ROLE_KEY); },
};

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the API; answers the parsed JSON (or null), throws ApiFailure with
// the API's error code and message.
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiFailure(0, 'network', 'warden could not be reached; check the connection and try again');
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const code = data && data.code ? data.code : `http_${response.status}`;
    const message = data && data.message ? data.message : response.statusText;
    if (response.status === 401 && session.token) {
      session.clear();
      renderSignIn(`Signed out: ${message} (${code}).`);
    }
    throw new ApiFailure(response.status, code, message);
  }
  return data;
}

async function login(url, email, password, admin) {
  const form = new URLSearchParams({ grant_type: 'password', username: email, password });
  if (admin) form.set('scope', 'admin');
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: form.toString(),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiFailure(response.status, data && data.code, (data && data.message) || response.statusText);
  }
  return data.access_token;
}

// ---- small DOM helpers ---------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function main() { return document.getElementById('main'); }

function show(...nodes) {
  const target = main();
  target.replaceChildren(...nodes);
}

function notify(message, ok) {
  const notice = document.getElementById('notice');
  notice.textContent = message;
  notice.className = ok ? 'notice ok' : 'notice';
  notice.hidden = !message;
}

function failed(error) {
  if (error instanceof ApiFailure) {
    notify(`${error.message} (${error.code})`);
  } else {
    notify(String(error));
  }
}

function when(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

function table(headers, rows, label) {
  return el('div', { class: 'scroll' },
    el('table', { 'aria-label': label },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows.length ? rows : [el('tr', {}, el('td', { colspan: headers.length, class: 'muted', text: 'Nothing here.' }))])));
}

function field(label, input) {
  return el('label', {}, label, input);
}

function changeButton(text, onclick, danger) {
  return el('button', {
    type: 'button',
    class: danger ? 'danger' : 'secondary',
    disabled: !session.canChange,
    title: session.canChange ? undefined : 'read-only: the support role cannot change anything',
    onclick,
  }, text);
}

// ---- names -----------------------------------------------------------
// Pages show who and what by name (an email, a runner's number and
// description, a scope's path); the id stays in the element's title.

// Loaded once per page shown (renderRoute forgets them), and again only
// when a live refresh meets an id they do not know: a refresh every 5 s
// need not list every user, runner and scope again.
let namesCache = null;

async function loadNames(ids) {
  const known = (id) => !id || namesCache.scopes.has(id) || namesCache.users.has(id) || namesCache.runners.has(id);
  if (namesCache && ids.every(known)) return namesCache;
  const [scopes, users, runners] = await Promise.all([
    api('GET', '/api/scopes'),
    api('GET', `/api/admins/users${query({ limit: 1000, include_deleted: true })}`),
    api('GET', `/api/admins/runners${query({ limit: 1000 })}`),
  ]);
  namesCache = {
    scopes: new Map(scopes.map((s) => [s.id, s.scope])),
    users: new Map(users.items.map((u) => [u.id, u.email || 'deleted user'])),
    runners: new Map(runners.items.map((r) => [r.id, runnerName(r)])),
  };
  return namesCache;
}

// A name with its id on hover; the id itself only when no name is known.
function named(map, id, fallback) {
  if (!id) return el('span', { text: fallback || '—' });
  return el('span', { title: id, text: map.get(id) || id });
}

function actorText(actor) {
  if (!actor) return '—';
  if (actor.user_id) return `user ${actor.user_id}`;
  if (actor.runner_id) return `runner ${actor.runner_id}`;
  if (actor.component) return `warden (${actor.component})`;
  if ('os_user' in actor) return `command line (${actor.os_user || 'unknown OS user'})`;
  return JSON.stringify(actor);
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// ---- sign-in -------------------------------------------------------------

async function renderSignIn(message) {
  stopLive();
  document.getElementById('nav').hidden = true;
  document.getElementById('who').replaceChildren();
  notify(message || '');
  let options = { ldap: [], oidc: [] };
  try {
    options = await (await fetch('/api/auth/providers')).json();
  } catch (_) { /* local sign-in still works */ }
  const method = el('select', { id: 'signin-method', name: 'method' },
    el('option', { value: '/api/local-account/login', text: 'Local account' }),
    (options.ldap || []).map((p) => el('option', { value: p.login_url, text: `LDAP: ${p.name}` })));
  const email = el('input', { id: 'signin-email', name: 'username', type: 'text', autocomplete: 'username', required: true });
  const password = el('input', { id: 'signin-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      notify('');
      await signIn(method.value, email.value, password.value);
    },
  },
  field('Sign in with', method),
  field('Email or user name', email),
  field('Password', password),
  el('button', { type: 'submit', text: 'Sign in with admin rights' }));
  // Single sign-on: the provider's page, then back here (see takeOidcAnswer).
  const oidc = (options.oidc || []).length
    ? el('div', { class: 'oidc' },
      el('p', { class: 'muted', text: 'Or with single sign-on:' }),
      options.oidc.map((p) => el('p', {},
        el('a', { class: 'button', href: `${p.login_url}?scope=admin&console=true`, text: `Sign in with ${p.name}` }), ' ',
        el('a', { href: `${p.login_url}?console=true`, text: `${p.name}, read-only (support)` }))))
    : null;
  show(el('section', { class: 'signin' },
    el('h1', { text: 'warden console' }),
    el('p', { class: 'muted', text: 'Admins sign in with admin rights; support users see everything read-only.' }),
    form, oidc));
  email.focus();
}

async function signIn(url, email, password) {
  try {
    const token = await login(url, email, password, true);
    session.set(token, 'admin');
  } catch (error) {
    // Not an admin: a support user may still read.
    if (!(error instanceof ApiFailure) || error.status !== 403) {
      failed(error);
      return;
    }
    try {
      const token = await login(url, email, password, false);
      session.set(token, 'user');
      const me = await api('GET', '/api/users/me');
      if (me.role !== 'support') {
        session.clear();
        notify('This account is neither an admin nor support: the console is not for it (admin_scope_not_granted).');
        return;
      }
      session.set(token, 'support');
    } catch (inner) {
      session.clear();
      failed(inner);
      return;
    }
  }
  if (!location.hash || location.hash === '#/' || location.hash === '#/dashboard') {
    // (Setting the hash routes by itself: hashchange.)
    if (location.hash === '#/dashboard') route(); else location.hash = '#/dashboard';
  } else {
    route();
  }
}

async function signOut() {
  try { await api('POST', '/api/auth/logout'); } catch (_) { /* signed out locally anyway */ }
  session.clear();
  location.hash = '';
  renderSignIn('Signed out.');
}

function renderChrome() {
  document.getElementById('nav').hidden = false;
  // A runner's or a job's page belongs to its list's section.
  const section = location.hash.replace(/^#\/(runner|job|scope)\//, '#/$1s/');
  for (const link of document.querySelectorAll('#nav a')) {
    const current = section.startsWith(link.getAttribute('href'));
    if (current) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  document.getElementById('who').replaceChildren(
    el('span', { class: 'pill', text: session.role === 'admin' ? 'admin' : 'support (read-only)' }),
    el('button', { type: 'button', class: 'secondary', onclick: signOut, text: 'Sign out' }));
}

// ---- live refresh ----------------------------------------------------------

function stopLive() {
  if (liveTimer) clearInterval(liveTimer);
  liveTimer = null;
}

function live(refresh) {
  stopLive();
  liveTimer = setInterval(() => refresh().catch(failed), LIVE_EVERY_MS);
}

// ---- pages ---------------------------------------------------------------

// A small line chart of `values` (one per minute), drawn as SVG through
// DOM calls (nothing inline for the CSP to refuse).
function chart(label, values) {
  const svgNs = 'http://www.w3.org/2000/svg';
  const width = 240;
  const height = 48;
  const peak = Math.max(0, ...values);
  const top = Math.max(1, peak);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`).join(' ');
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${label}: latest ${values[values.length - 1] ?? 0}, highest ${peak}`);
  svg.setAttribute('class', 'chart');
  const line = document.createElementNS(svgNs, 'polyline');
  line.setAttribute('points', points);
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', 'currentColor');
  line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  return el('figure', { class: 'card chart-card' }, svg,
    el('figcaption', { class: 'l', text: `${label} (now ${values[values.length - 1] ?? 0}, highest ${peak})` }));
}

async function dashboardPage() {
  const counts = el('div', { class: 'cards', id: 'dashboard-counts' });
  const charts = el('div', { class: 'cards', id: 'dashboard-charts' });
  const projectors = el('div', { id: 'dashboard-projectors' });
  const instances = el('div', { id: 'dashboard-instances' });
  const refresh = async () => {
    const dashboard = await api('GET', '/api/admins/dashboard');
    const health = await api('GET', '/api/health');
    const activity = await api('GET', `/api/admins/activity${query({ minutes: 180 })}`);
    charts.replaceChildren(
      chart('jobs submitted per minute', activity.submitted),
      chart('jobs assigned per minute', activity.assigned),
      chart('jobs finished per minute', activity.finished),
      chart('jobs queued', activity.queued),
      chart('machines online', activity.machines_online));
    const card = (label, n) => el('div', { class: 'card' }, el('div', { class: 'n', text: n }), el('div', { class: 'l', text: label }));
    const users = Object.values(dashboard.users).reduce((sum, roles) => sum + Object.values(roles).reduce((a, b) => a + b, 0), 0);
    counts.replaceChildren(
      card('jobs queued', dashboard.jobs.queued || 0),
      card('jobs running', dashboard.jobs.assigned || 0),
      card('machines active', `${dashboard.machines.active} / ${dashboard.machines.total}`),
      card('runners active', dashboard.runners.active || 0),
      card('runners paused', dashboard.runners.paused || 0),
      card('runners invalidated', dashboard.runners.invalidated || 0),
      card('users', users));
    projectors.replaceChildren(table(['projector', 'position', 'led here', 'stuck on'],
      health.projectors.map((p) => el('tr', {},
        el('td', { text: p.name }),
        el('td', { text: p.checkpoint ? `${p.checkpoint.transaction_id}:${p.checkpoint.position}` : '—' }),
        el('td', { text: p.leading_here ? 'yes' : 'no' }),
        el('td', { text: p.stuck_on ? `${p.stuck_on.event_type} v${p.stuck_on.schema_version}` : '—' }))),
      'Projector positions'));
    try {
      const listed = await api('GET', '/api/admins/instances');
      instances.replaceChildren(table(['instance', 'host', 'version', 'last seen', 'leads'],
        listed.map((i) => el('tr', {},
          el('td', {}, el('code', { text: i.id })), el('td', { text: `${i.hostname} (pid ${i.pid})` }),
          el('td', { text: i.version }), el('td', { text: when(i.last_seen_at) }),
          el('td', { text: i.leads.join(', ') || '—' }))),
        'Instances'));
    } catch (error) {
      instances.replaceChildren(el('p', { class: 'muted', text: `${error.message}` }));
    }
  };
  await refresh();
  show(el('h1', { text: 'Dashboard' }), counts, el('h2', { text: 'The last three hours' }), charts,
    el('h2', { text: 'Projectors' }), projectors,
    el('h2', { text: 'Instances' }), instances,
    el('p', { class: 'muted', text: 'Refreshes every 5 seconds.' }));
  live(refresh);
}

function tokenPanel(title, token) {
  const input = el('input', { readonly: true, value: token, 'aria-label': 'runner token', id: 'new-runner-token' });
  return el('div', { class: 'token', role: 'status' },
    el('strong', { text: title }),
    el('p', { text: 'Copy it now: warden keeps only its hash, so it is shown this once and never again.' }),
    input,
    el('p', {}, el('button', {
      type: 'button',
      onclick: async () => {
        try { await navigator.clipboard.writeText(token); notify('Token copied.', true); } catch (_) { input.select(); notify('Select the token and copy it.'); }
      },
    }, 'Copy token')));
}

async function runnersPage(params) {
  const status = el('select', { name: 'status' }, ['', 'active', 'invalidated'].map((s) => el('option', { value: s, text: s || 'any', selected: params.status === s })));
  const paused = el('select', { name: 'paused' }, [['', 'any'], ['true', 'paused'], ['false', 'not paused']].map(([v, t]) => el('option', { value: v, text: t, selected: params.paused === v })));
  const tag = el('input', { name: 'tag', value: params.tag || '' });
  const since = el('input', { name: 'contacted_since', type: 'datetime-local', value: params.contacted_since_local || '' });
  const filters = el('form', {
    class: 'filters',
    onsubmit: (event) => {
      event.preventDefault();
      const contacted = since.value ? new Date(since.value).toISOString() : '';
      location.hash = `#/runners${query({ status: status.value, paused: paused.value, tag: tag.value, contacted_since: contacted })}`;
    },
  }, field('Status', status), field('Paused', paused), field('Tag', tag), field('Contacted since', since), el('button', { type: 'submit', text: 'Filter' }));

  const description = el('input', { name: 'description', id: 'runner-description' });
  const tags = el('input', { name: 'tags', id: 'runner-tags', placeholder: 'gpu, linux' });
  const priority = el('input', { name: 'priority', type: 'number', value: '0', min: '-1000', max: '1000' });
  const created = el('div', { id: 'created-runner' });
  const create = el('form', {
    class: 'inline',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const body = { description: description.value || undefined, tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean), priority: Number(priority.value) };
        const runner = await api('POST', '/api/admins/create_runner', body);
        created.replaceChildren(tokenPanel(`Runner ${runner.id} created. Its token:`, runner.token));
        await fill();
      } catch (error) { failed(error); }
    },
  }, field('Description', description), field('Tags (comma-separated)', tags), field('Priority', priority),
  el('button', { type: 'submit', disabled: !session.canChange, text: 'Create runner' }));

  const list = el('div', { id: 'runner-list' });
  const fill = async () => {
    const page = await api('GET', `/api/admins/runners${query({ status: params.status, paused: params.paused, tag: params.tag, contacted_since: params.contacted_since, limit: 200 })}`);
    const names = await loadNames(page.items.flatMap((r) => [r.scope_id, r.created_by]));
    list.replaceChildren(table(['#', 'runner', 'scope', 'created by', 'status', 'tags', 'priority', 'machines', 'last contact', ''],
      page.items.map((r) => el('tr', {},
        el('td', { text: r.number }),
        el('td', {}, el('a', { href: `#/runner/${r.id}`, title: r.id, text: r.description || runnerName(r) })),
        el('td', {}, named(names.scopes, r.scope_id, 'instance')),
        el('td', {}, named(names.users, r.created_by, 'the command line or warden')),
        el('td', {}, el('span', { class: r.status === 'active' ? 'pill ok' : 'pill bad', text: r.status }), r.paused ? el('span', { class: 'pill', text: 'paused' }) : null),
        el('td', { text: r.tags.join(', ') || '—' }),
        el('td', { text: r.priority }),
        el('td', { text: r.machines.length }),
        el('td', { text: when(r.last_contact_at) }),
        el('td', { class: 'actions' }, runnerActions(r, fill)))),
      'Runners'));
  };
  await fill();
  show(el('h1', { text: 'Runners' }), created, el('h2', { text: 'New runner' }), create,
    el('h2', { text: 'Fleet' }), filters, list);
}

function runnerName(r) {
  return `#${r.number}${r.description ? ` “${r.description}”` : ''}`;
}

function runnerActions(r, refresh) {
  if (r.status !== 'active') return [];
  const act = (fn) => async () => { try { await fn(); await refresh(); } catch (error) { failed(error); } };
  return [
    changeButton(r.paused ? 'Resume' : 'Pause', act(async () => {
      await api('PATCH', `/api/admins/runners/${r.id}`, { paused: !r.paused });
      notify(`Runner ${runnerName(r)} ${r.paused ? 'resumed' : 'paused'}.`, true);
    })),
    ' ',
    // No refresh after a reset: nothing listed changes, and a refreshed
    // runner page would take the new token off the screen.
    changeButton('Reset token', () => (async () => {
      const grace = prompt(`New token for runner ${runnerName(r)}. How long may the old token still work (for example 1h or 30m)? Leave empty to stop it at once.`, '');
      if (grace === null) return;
      const reset = await api('POST', `/api/admins/reset_runner_token${query({ runner_id: r.id, grace_period: grace.trim() })}`);
      document.getElementById('created-runner')?.replaceChildren(tokenPanel(`New token of runner ${runnerName(r)}:`, reset.token));
    })().catch(failed)),
    ' ',
    changeButton('Invalidate', act(async () => {
      if (!confirm(`Invalidate runner ${runnerName(r)}? Its token stops working at once and its jobs go back to the queue. This cannot be undone.`)) return;
      await api('DELETE', `/api/admins/invalidate_runner${query({ runner_id: r.id })}`);
      notify(`Runner ${runnerName(r)} invalidated.`, true);
    }), true),
  ];
}

async function runnerPage(id) {
  const runner = await api('GET', `/api/admins/runners${query({ limit: 1000 })}`).then((page) => page.items.find((r) => r.id === id));
  if (!runner) throw new ApiFailure(404, 'not_found', `no runner ${id}`);
  const machines = await api('GET', `/api/admins/machines${query({ runner_id: id, limit: 1000 })}`);
  const description = el('input', { value: runner.description || '', 'aria-label': 'description' });
  const tags = el('input', { value: runner.tags.join(', '), 'aria-label': 'tags' });
  const priority = el('input', { type: 'number', value: runner.priority, 'aria-label': 'priority' });
  const edit = el('form', {
    class: 'inline',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api('PATCH', `/api/admins/runners/${id}`, { description: description.value, tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean), priority: Number(priority.value) });
        notify('Saved.', true);
      } catch (error) { failed(error); }
    },
  }, field('Description', description), field('Tags', tags), field('Priority', priority),
  el('button', { type: 'submit', disabled: !session.canChange || runner.status !== 'active', text: 'Save' }));
  show(el('h1', { text: `Runner ${runnerName(runner)}` }),
    el('p', {}, el('span', { class: runner.status === 'active' ? 'pill ok' : 'pill bad', text: runner.status }), ' ',
      runner.paused ? el('span', { class: 'pill', text: 'paused' }) : null, ' created ', when(runner.created_at), ' · ',
      el('a', { href: `#/time-travel?kind=runners&id=${id}`, text: 'as it was…' }), ' · ',
      el('a', { href: `#/audit?stream=runner-${id}`, text: 'its audit trail' })),
    el('div', { id: 'created-runner' }),
    el('p', {}, runnerActions(runner, () => runnerPage(id))),
    el('h2', { text: 'Settings' }), edit,
    el('h2', { text: 'Machines' }),
    table(['system id / session', 'protocol', 'name', 'version', 'platform', 'address', 'registered', 'last contact'],
      machines.items.map((m) => el('tr', {},
        el('td', {}, el('code', { text: m.system_id })),
        // Project-W machines are named after their session (pw-…).
        el('td', { text: m.system_id.startsWith('pw-') ? 'Project-W' : 'warden' }),
        el('td', { text: m.name || '—' }),
        el('td', { text: [m.version, m.revision].filter(Boolean).join(' ') || '—' }),
        el('td', { text: [m.platform, m.architecture].filter(Boolean).join(' / ') || '—' }),
        el('td', { text: m.ip_address || '—' }), el('td', { text: when(m.registered_at) }),
        el('td', { text: when(m.contacted_at) }))),
      'Machines'));
}

async function jobsPage(params) {
  const status = el('select', { name: 'status' }, ['', 'queued', 'assigned', 'succeeded', 'failed', 'aborted', 'cancelled'].map((s) => el('option', { value: s, text: s || 'any', selected: params.status === s })));
  const filters = el('form', {
    class: 'filters',
    onsubmit: (event) => { event.preventDefault(); location.hash = `#/jobs${query({ status: status.value })}`; },
  }, field('Status', status), el('button', { type: 'submit', text: 'Filter' }));
  const list = el('div', { id: 'job-list' });
  const queueNote = params.status === 'queued' ? 'In assignment order: highest priority first, then oldest.' : 'Newest first.';
  const fill = async () => {
    const page = await api('GET', `/api/admins/jobs${query({ status: params.status, limit: 200 })}`);
    let items = page.items;
    if (params.status === 'queued') {
      items = [...items].sort((a, b) => (b.priority - a.priority) || (new Date(a.submitted_at) - new Date(b.submitted_at)));
    }
    const names = await loadNames(items.flatMap((j) => [j.submitted_by, j.scope_id, j.runner_id]));
    list.replaceChildren(table(['job', 'status', 'priority', 'tags', 'submitted by', 'scope', 'submitted', 'runner', ''],
      items.map((j) => el('tr', {},
        el('td', {}, el('a', { href: `#/job/${j.id}`, title: j.id, text: j.number ? `#${j.number}` : j.id })),
        el('td', {}, el('span', { class: 'pill', text: j.status })),
        el('td', { text: j.priority }),
        el('td', { text: (j.required_tags || []).join(', ') || '—' }),
        el('td', {}, named(names.users, j.submitted_by)),
        el('td', {}, named(names.scopes, j.scope_id, 'instance')),
        el('td', { text: when(j.submitted_at) }),
        el('td', {}, j.runner_id ? el('a', { href: `#/runner/${j.runner_id}`, title: j.runner_id, text: names.runners.get(j.runner_id) || j.runner_id }) : '—'),
        el('td', {}, el('a', { href: `#/job/${j.id}`, text: 'history' })))),
      'Jobs'));
  };
  await fill();
  show(el('h1', { text: 'Jobs' }), filters, el('p', { class: 'muted', text: `${queueNote} Refreshes every 5 seconds.` }), list);
  live(fill);
}

function auditTable(entries) {
  return table(['when', 'event', 'stream', 'who', 'from where', 'why', 'what'],
    entries.map((e) => el('tr', {},
      el('td', { text: when(e.recorded_at) }),
      el('td', { text: e.event_type }),
      el('td', {}, el('code', { text: `${e.stream_id} v${e.stream_version}` })),
      el('td', { text: actorText(e.actor) }),
      el('td', { text: [e.source_ip, e.request_id && `request ${e.request_id}`].filter(Boolean).join(' · ') || '—' }),
      el('td', { text: [e.data && e.data.reason, e.causation_id && `caused by ${e.causation_id}`].filter(Boolean).join(' · ') || '—' }),
      el('td', {}, el('pre', { text: JSON.stringify(e.data, null, 1) })))),
    'Audit entries');
}

async function jobPage(id) {
  const history = await api('GET', `/api/admins/audit${query({ stream: `job-${id}`, order: 'oldest', limit: 1000 })}`);
  show(el('h1', {}, 'Job ', el('code', { text: id })),
    el('p', { class: 'muted', text: 'Its history from the log: submitted, assigned, re-queued (with the reason), finished.' }),
    auditTable(history.entries));
}

async function scopesPage() {
  const list = el('div', { id: 'scope-list' });
  const groupName = el('input', { name: 'group-name', 'aria-label': 'new group name', placeholder: 'physics' });
  const groupParent = el('input', { name: 'group-parent', 'aria-label': 'parent group', placeholder: 'group:… (empty: top level)' });
  const projectName = el('input', { name: 'project-name', 'aria-label': 'new project name', placeholder: 'lattice-qcd' });
  const projectGroup = el('input', { name: 'project-group', 'aria-label': 'group of the project', placeholder: 'group:physics' });
  const create = (path, body) => async (event) => {
    event.preventDefault();
    try {
      const created = await api('POST', path, body());
      notify(`${created.scope} created.`, true);
      await fill();
    } catch (error) { failed(error); }
  };
  const newGroup = el('form', { class: 'inline', onsubmit: create('/api/scopes/groups', () => ({ name: groupName.value, parent: groupParent.value || undefined })) },
    field('Name', groupName), field('In group', groupParent), el('button', { type: 'submit', disabled: !session.canChange, text: 'Create group' }));
  const newProject = el('form', { class: 'inline', onsubmit: create('/api/scopes/projects', () => ({ name: projectName.value, group: projectGroup.value })) },
    field('Name', projectName), field('In group', projectGroup), el('button', { type: 'submit', disabled: !session.canChange, text: 'Create project' }));
  const fill = async () => {
    const scopes = await api('GET', '/api/scopes');
    list.replaceChildren(table(['scope', 'kind', 'state', 'runner limit'],
      scopes.map((s) => el('tr', {},
        el('td', {}, el('a', { href: `#/scope/${encodeURIComponent(s.scope)}`, title: s.id, text: s.scope })),
        el('td', { text: s.kind }),
        el('td', {}, el('span', { class: s.archived ? 'pill bad' : 'pill ok', text: s.archived ? 'archived' : 'open' })),
        el('td', { text: s.runner_limit ?? 'default' }))),
      'Groups and projects'));
  };
  await fill();
  show(el('h1', { text: 'Scopes' }),
    el('p', { class: 'muted', text: 'Groups nest; a project belongs to one group. A runner of a scope takes the jobs of that scope and below; instance runners take every job (docs/scopes.md).' }),
    el('h2', { text: 'New group' }), newGroup, el('h2', { text: 'New project' }), newProject,
    el('h2', { text: 'Groups and projects' }), list);
}

async function scopePage(reference) {
  const names = await loadNames([]);
  const [members, runners, jobs] = await Promise.all([
    api('GET', `/api/scopes/members${query({ scope: reference })}`),
    api('GET', `/api/scopes/runners${query({ scope: reference, limit: 200 })}`),
    api('GET', `/api/scopes/jobs${query({ scope: reference, limit: 50 })}`),
  ]);
  show(el('h1', { text: reference }),
    el('h2', { text: 'Members' }),
    table(['user', 'role', 'from'], members.map((m) => el('tr', {},
      el('td', { title: m.user_id, text: m.email || m.user_id }), el('td', { text: m.role }),
      el('td', { text: m.source === 'mapping' ? 'directory or provider group' : 'granted' }))), 'Members'),
    el('h2', { text: 'Runners (this scope and below)' }),
    table(['#', 'runner', 'scope', 'status', 'machines'], runners.items.map((r) => el('tr', {},
      el('td', { text: r.number }),
      el('td', {}, el('a', { href: `#/runner/${r.id}`, title: r.id, text: r.description || runnerName(r) })),
      el('td', {}, named(names.scopes, r.scope_id, 'instance')),
      el('td', { text: r.status }), el('td', { text: r.machines.length }))), 'Runners of the scope'),
    el('h2', { text: 'Latest jobs (this scope and below)' }),
    table(['job', 'status', 'submitted by', 'scope', 'submitted'], jobs.items.map((j) => el('tr', {},
      el('td', {}, el('a', { href: `#/job/${j.id}`, title: j.id, text: j.number ? `#${j.number}` : j.id })),
      el('td', { text: j.status }),
      el('td', {}, named(names.users, j.submitted_by)),
      el('td', {}, named(names.scopes, j.scope_id, 'instance')),
      el('td', { text: when(j.submitted_at) }))), 'Jobs of the scope'));
}

async function usersPage() {
  const list = el('div', { id: 'user-list' });
  const fill = async () => {
    const page = await api('GET', `/api/admins/users${query({ limit: 500 })}`);
    list.replaceChildren(table(['user', 'provider', 'role', 'created', ''],
      page.items.map((u) => {
        const role = el('select', { 'aria-label': `role of ${u.email || u.id}`, disabled: !session.canChange || u.provider !== 'local' },
          ['user', 'support', 'admin', 'api'].map((r) => el('option', { value: r, text: r === 'api' ? 'api (service account)' : r, selected: u.role === r })));
        return el('tr', {},
          el('td', { text: u.email || u.id }),
          el('td', { text: u.provider }),
          el('td', {}, role, ' ', changeButton('Change role', async () => {
            try {
              await api('PUT', `/api/admins/users/${u.id}/role`, { role: role.value });
              notify(`${u.email} is now ${role.value}.`, true);
              await fill();
            } catch (error) { failed(error); }
          })),
          el('td', { text: when(u.created_at) }),
          el('td', { class: 'actions' },
            el('a', { href: `#/time-travel?kind=users&id=${u.id}`, text: 'as it was…' }), ' ',
            changeButton('Delete', async () => {
              if (!confirm(`Delete ${u.email || u.id}? Their personal data is erased and their jobs cancelled. This cannot be undone.`)) return;
              try { await api('DELETE', `/api/admins/users/${u.id}`); notify(`${u.email} deleted.`, true); await fill(); } catch (error) { failed(error); }
            }, true)));
      }),
      'Users'));
  };
  await fill();
  show(el('h1', { text: 'Users' }), list);
}

async function auditPage(params) {
  const inputs = {
    actor: el('input', { name: 'actor', value: params.actor || '', placeholder: 'user id, runner id or component' }),
    stream: el('input', { name: 'stream', value: params.stream || '', placeholder: 'runner-…, job-…, user-…' }),
    event_type: el('input', { name: 'event_type', value: params.event_type || '', placeholder: 'RunnerInvalidated' }),
    since: el('input', { name: 'since', type: 'datetime-local' }),
    until: el('input', { name: 'until', type: 'datetime-local' }),
  };
  const filters = el('form', {
    class: 'filters',
    onsubmit: (event) => {
      event.preventDefault();
      const iso = (input) => (input.value ? new Date(input.value).toISOString() : '');
      location.hash = `#/audit${query({ actor: inputs.actor.value, stream: inputs.stream.value, event_type: inputs.event_type.value, since: iso(inputs.since), until: iso(inputs.until) })}`;
    },
  }, field('Actor', inputs.actor), field('Stream', inputs.stream), field('Event type', inputs.event_type),
  field('Since', inputs.since), field('Until', inputs.until), el('button', { type: 'submit', text: 'Filter' }));
  const entries = el('div', { id: 'audit-entries' });
  const more = el('p', {});
  const load = async (cursor) => {
    const page = await api('GET', `/api/admins/audit${query({ actor: params.actor, stream: params.stream, type: params.event_type, since: params.since, until: params.until, cursor, limit: 50 })}`);
    entries.append(auditTable(page.entries));
    more.replaceChildren(page.next_cursor ? el('button', { type: 'button', class: 'secondary', onclick: () => load(page.next_cursor).catch(failed), text: 'Older entries' }) : el('span', { class: 'muted', text: 'The beginning of the log.' }));
  };
  await load();
  show(el('h1', { text: 'Audit trail' }), filters, entries, more);
}

async function timeTravelPage(params) {
  const kind = el('select', { name: 'kind' }, [['runners', 'runner'], ['users', 'user']].map(([v, t]) => el('option', { value: v, text: t, selected: params.kind === v })));
  const id = el('input', { name: 'id', value: params.id || '', size: 38 });
  const at = el('input', { name: 'at', type: 'datetime-local' });
  const form = el('form', {
    class: 'filters',
    onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/time-travel${query({ kind: kind.value, id: id.value.trim(), at: at.value ? new Date(at.value).toISOString() : '' })}`;
    },
  }, field('Kind', kind), field('Id', id), field('As of', at), el('button', { type: 'submit', text: 'Show' }));
  const nodes = [el('h1', { text: 'Time travel' }), form];
  if (params.id) {
    const path = `/api/admins/${params.kind || 'runners'}/${params.id}/state`;
    const [then, now] = await Promise.all([api('GET', `${path}${query({ at: params.at })}`), api('GET', path)]);
    nodes.push(el('div', { class: 'side' },
      el('section', {}, el('h2', { text: `As of ${params.at ? when(params.at) : 'now'}` }), el('pre', { text: JSON.stringify(then, null, 1) })),
      el('section', {}, el('h2', { text: 'Now' }), el('pre', { text: JSON.stringify(now, null, 1) }))));
  }
  show(...nodes);
}

// ---- single sign-on ----------------------------------------------------------

// An OIDC login started here ends at /admin#oidc_token=…&admin=… (or
// #oidc_error=…&message=…): take it and wipe it from the address bar.
async function takeOidcAnswer() {
  const hash = location.hash.replace(/^#/, '');
  if (!hash.startsWith('oidc_')) return true;
  const answer = new URLSearchParams(hash);
  history.replaceState(null, '', '/admin#/dashboard');
  if (answer.get('oidc_error')) {
    renderSignIn(`${answer.get('message')} (${answer.get('oidc_error')})`);
    return false;
  }
  if (answer.get('admin') === 'true') {
    session.set(answer.get('oidc_token'), 'admin');
    return true;
  }
  session.set(answer.get('oidc_token'), 'user');
  try {
    const me = await api('GET', '/api/users/me');
    if (me.role === 'support') {
      session.set(answer.get('oidc_token'), 'support');
      return true;
    }
  } catch (_) { /* refused below */ }
  session.clear();
  renderSignIn('This account is neither an admin nor support: the console is not for it (admin_scope_not_granted).');
  return false;
}

// ---- routing ---------------------------------------------------------------

// One page at a time: a page still loading when the next is asked for
// finishes first, so it can never replace the newer one.
let routing = Promise.resolve();
function route() {
  routing = routing.then(renderRoute, renderRoute);
  return routing;
}

async function renderRoute() {
  stopLive();
  namesCache = null;
  if (!(await takeOidcAnswer())) return;
  if (!session.token) { renderSignIn(); return; }
  renderChrome();
  const [path, search] = location.hash.replace(/^#/, '').split('?');
  const params = Object.fromEntries(new URLSearchParams(search || ''));
  const parts = path.split('/').filter(Boolean);
  notify('');
  try {
    switch (parts[0]) {
      case 'runners': await runnersPage(params); break;
      case 'runner': await runnerPage(parts[1]); break;
      case 'jobs': await jobsPage(params); break;
      case 'scopes': await scopesPage(); break;
      case 'scope': await scopePage(decodeURIComponent(parts.slice(1).join('/'))); break;
      case 'job': await jobPage(parts[1]); break;
      case 'users': await usersPage(); break;
      case 'audit': await auditPage(params); break;
      case 'time-travel': await timeTravelPage(params); break;
      default: await dashboardPage();
    }
    main().focus();
  } catch (error) {
    if (session.token) {
      failed(error);
      show(el('h1', { text: 'This page could not be shown' }), el('p', { text: error.message }));
    }
  }
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', route);

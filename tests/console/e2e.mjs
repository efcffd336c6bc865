// Drives Debian's chromium (headless) through warden's admin console as an
// admin, a support user and a normal user would. Started by
// tests/it/console.rs with a running warden; exits non-zero on the first
// failed expectation. With WARDEN_CONSOLE_SCREENSHOTS=<folder> it also
// saves screenshots of the main pages (docs/console.md shows them).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const base = process.env.WARDEN_URL;
const admin = { email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD };
const user = { email: process.env.USER_EMAIL, password: process.env.USER_PASSWORD };
const shots = process.env.WARDEN_CONSOLE_SCREENSHOTS;
const TIMEOUT = 15000;

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

// The API as a plain client (the runner machine, the job's submitter).
async function call(method, path, token, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function apiLogin({ email, password }, admin) {
  const form = new URLSearchParams({ grant_type: 'password', username: email, password });
  if (admin) form.set('scope', 'admin');
  const response = await fetch(`${base}/api/local-account/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  expect(response.ok, `API log-in of ${email}: ${response.status}`);
  return (await response.json()).access_token;
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function signIn(page, { email, password }) {
  await page.goto(`${base}/admin`);
  await page.getByLabel('Email or user name').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in with admin rights' }).click();
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in with admin rights' }).waitFor();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  // Any script error or CSP violation fails the run.
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of (401|403|404|409)/.test(message.text())) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  const dialogs = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.accept(dialog.type() === 'prompt' ? '1h' : undefined);
  });

  // The page itself: a strict CSP, no inline code.
  const served = await fetch(`${base}/admin`);
  const csp = served.headers.get('content-security-policy') || '';
  expect(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `CSP: ${csp}`);

  // 1. An admin signs in and sees the dashboard.
  await page.goto(`${base}/admin`);
  await page.getByLabel('Password').waitFor();
  await shot(page, 'signin');
  await signIn(page, admin);
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await page.locator('#dashboard-counts .card').first().waitFor();
  await page.locator('#dashboard-charts svg.chart').first().waitFor();
  expect(await page.locator('#dashboard-charts svg.chart').count() === 5, 'the dashboard draws its five charts');
  await shot(page, 'dashboard');

  // 2. Creates a runner and reads its token once.
  await page.getByRole('link', { name: 'Runners' }).click();
  await page.getByLabel('Description').fill('e2e runner');
  await page.getByLabel('Tags (comma-separated)').fill('gpu, linux');
  await page.getByRole('button', { name: 'Create runner' }).click();
  const token = await page.locator('#new-runner-token').inputValue();
  expect(token.startsWith('wdrt_'), `the token is shown: ${token}`);
  await shot(page, 'runner-created');
  await page.reload();
  await page.getByRole('heading', { name: 'Runners', exact: true }).waitFor();
  await page.locator('#runner-list table').waitFor();
  expect(await page.locator('#new-runner-token').count() === 0, 'a reload no longer shows the token');
  expect((await page.content()).indexOf(token) === -1, 'the token is nowhere in the page after a reload');

  // 2b. Creates a group and a project on the Scopes page, and opens the
  // project's page.
  await page.getByRole('link', { name: 'Scopes' }).click();
  await page.getByRole('heading', { name: 'Scopes', exact: true }).waitFor();
  await page.getByLabel('new group name').fill('e2e');
  await page.getByRole('button', { name: 'Create group' }).click();
  await page.getByRole('link', { name: 'group:e2e' }).waitFor();
  await page.getByLabel('new project name').fill('app');
  await page.getByLabel('group of the project').fill('group:e2e');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.getByRole('link', { name: 'project:e2e/app' }).click();
  await page.getByRole('heading', { name: 'project:e2e/app' }).waitFor();
  await page.getByRole('table', { name: 'Members' }).waitFor();
  await shot(page, 'scope');
  await page.getByRole('link', { name: 'Runners' }).click();
  await page.locator('#runner-list table').waitFor();

  // 3. A job is submitted and a machine of the runner takes it.
  const userToken = await apiLogin(user, false);
  const submitted = await call('POST', '/api/jobs', userToken, { payload: { e2e: true }, required_tags: ['gpu'] });
  expect(submitted.status === 201, `job submitted: ${submitted.status}`);
  const jobId = submitted.body.id;
  const taken = await call('POST', '/api/runners/jobs/request', token, { system_id: 'r_e2e00000001', wait_seconds: 5 });
  expect(taken.status === 200 && taken.body.id === jobId, `the machine takes the job: ${taken.status}`);

  // 4. The runner's page shows the machine.
  await page.getByRole('link', { name: 'e2e runner' }).click();
  await page.getByRole('heading', { name: /e2e runner/ }).waitFor();
  await page.getByText('r_e2e00000001').waitFor();
  await shot(page, 'runner');

  // 5. Resets its token with a grace period (the prompt answers 1h): the
  // new token is shown once, the old one still works for now.
  await page.getByRole('button', { name: 'Reset token' }).click();
  const renewed = await page.locator('#new-runner-token').inputValue();
  expect(renewed.startsWith('wdrt_') && renewed !== token, 'a new token is shown');
  await page.waitForTimeout(1000);
  expect(await page.locator('#new-runner-token').count() === 1, 'the new token stays on screen');
  expect((await call('POST', '/api/runners/verify', token)).status === 200, 'the old token works during its grace');
  expect((await call('POST', '/api/runners/verify', renewed)).status === 200, 'the new token works');

  // 6. Invalidates it, after a confirmation that names it.
  await page.getByRole('button', { name: 'Invalidate' }).click();
  await page.getByText(/invalidated\./).waitFor();
  expect(dialogs.some((d) => d.includes('e2e runner') && d.includes('Invalidate')), `confirmation: ${dialogs}`);

  // 7. Its job was re-queued, and the audit trail names the admin.
  // (The re-assignment reaction requeues it right after the invalidation.)
  for (let attempt = 0; ; attempt += 1) {
    await page.goto(`${base}/admin#/job/${jobId}`);
    await page.reload();
    await page.getByRole('cell', { name: 'JobSubmitted' }).waitFor();
    if (await page.getByRole('cell', { name: 'JobRequeued' }).count() > 0) break;
    expect(attempt < 30, 'the job history shows it re-queued');
    await page.waitForTimeout(300);
  }
  await shot(page, 'job-history');
  // Lists name who and what: no bare UUID where a name exists.
  const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
  for (const [hash, list] of [['#/jobs', '#job-list table'], ['#/runners', '#runner-list table'], ['#/scopes', '#scope-list table']]) {
    await page.goto(`${base}/admin${hash}`);
    await page.locator(`${list} tbody tr`).first().waitFor();
    const text = await page.locator(list).innerText();
    expect(!uuid.test(text), `${hash} shows names, not ids: ${text}`);
  }
  let adminToken = await apiLogin(admin, true);
  const me = await call('GET', '/api/users/me', adminToken);
  await page.goto(`${base}/admin#/audit?event_type=RunnerInvalidated`);
  const entry = page.getByRole('row').filter({ hasText: 'RunnerInvalidated' }).first();
  await entry.waitFor();
  expect((await entry.textContent()).includes(`user ${me.body.id}`), 'the audit entry names the admin');
  await shot(page, 'audit');
  for (const [hash, heading, name] of [['#/jobs', 'Jobs', 'jobs'], ['#/users', 'Users', 'users'],
    [`#/time-travel?kind=users&id=${me.body.id}`, 'Time travel', 'time-travel']]) {
    await page.goto(`${base}/admin${hash}`);
    await page.getByRole('heading', { name: heading, exact: true }).waitFor();
    await page.locator('table, pre').first().waitFor();
    await shot(page, name);
  }

  // 8. Phone-sized: nothing wider than the screen but the scrolling tables.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/admin#/dashboard`);
  await page.locator('#dashboard-counts .card').first().waitFor();
  const overflow = await page.evaluate(() => document.body.scrollWidth - window.innerWidth);
  expect(overflow <= 1, `no horizontal overflow on a phone: ${overflow}px`);
  await shot(page, 'phone-dashboard');
  await page.setViewportSize({ width: 1280, height: 900 });
  await signOut(page);

  // 9. A support user sees the pages, but no change is possible. (The
  // sign-out above ended every token of the admin: log in again.)
  const stale = await call('GET', '/api/users/me', adminToken);
  expect(stale.status === 401, `signing out ends the admin's other tokens too: ${stale.status}`);
  adminToken = await apiLogin(admin, true);
  const userId = (await call('GET', '/api/users/me', userToken)).body.id;
  const promoted = await call('PUT', `/api/admins/users/${userId}/role`, adminToken, { role: 'support' });
  expect(promoted.status === 200, `support role: ${promoted.status}`);
  await signIn(page, user);
  await page.getByText('support (read-only)').waitFor();
  await page.getByRole('link', { name: 'Runners' }).click();
  await page.locator('#runner-list table').waitFor();
  expect(await page.getByRole('button', { name: 'Create runner' }).isDisabled(), 'support cannot create runners');
  const supportToken = await page.evaluate(() => sessionStorage.getItem('warden.console.token'));
  const refused = await call('POST', '/api/admins/create_runner', supportToken, {});
  expect(refused.status === 403, `the API refuses support's changes: ${refused.status}`);
  await page.getByRole('link', { name: 'Audit trail' }).click();
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
  await signOut(page);

  // 10. A normal user is refused.
  const demoted = await call('PUT', `/api/admins/users/${userId}/role`, adminToken, { role: 'user' });
  expect(demoted.status === 200, `user role: ${demoted.status}`);
  await signIn(page, user);
  await page.getByText(/neither an admin nor support/).waitFor();
  expect(await page.locator('#nav').isHidden(), 'no console for a normal user');
  expect(await page.evaluate(() => sessionStorage.getItem('warden.console.token')) === null, 'no token kept');

  // 11. The API docs (Swagger UI) work under their own CSP: every
  // operation is listed, no script error, no CSP violation.
  await page.goto(`${base}/docs/`);
  await page.locator('.opblock').first().waitFor();
  expect(await page.locator('.opblock').count() > 40, 'the docs list the operations');

  expect(problems.length === 0, problems.join('\n'));
  console.log('console e2e: all expectations met');
} finally {
  await browser.close();
}

// The console's single sign-on: an OIDC provider (tests/oidc) in front,
// driven in Debian's chromium. Started by tests/it/console.rs.
import { chromium } from 'playwright-core';

const base = process.env.WARDEN_URL;
const TIMEOUT = 15000;

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

// From the console's sign-in page through the provider's login (the test
// provider's stand-in: /interaction/<uid>/login?account=<id>) and back.
async function signInAt(page, link, account) {
  await page.goto(`${base}/admin`);
  await page.getByRole('link', { name: link }).click();
  await page.waitForURL(/\/interaction\/[^/]+$/);
  await page.goto(`${page.url()}/login?account=${account}`);
  await page.waitForURL(/\/admin#/);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
try {
  // An admin of the provider gets the whole console; the token is not
  // left in the address bar.
  let context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT);
  let page = await context.newPage();
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await signInAt(page, 'Sign in with corp', 'root');
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await page.locator('.who .pill', { hasText: 'admin' }).waitFor();
  expect(!page.url().includes('oidc_token'), `the token left the address bar: ${page.url()}`);
  await page.getByRole('link', { name: 'Runners' }).click();
  await page.getByRole('button', { name: 'Create runner' }).click();
  expect((await page.locator('#new-runner-token').inputValue()).startsWith('wdrt_'), 'an SSO admin creates runners');
  await context.close();

  // A user of the provider asking for admin rights gets the reason.
  context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT);
  page = await context.newPage();
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await signInAt(page, 'Sign in with corp', 'alice');
  await page.getByText(/admin_scope_denied/).waitFor();
  expect(await page.locator('#nav').isHidden(), 'no console for a user');
  expect(await page.evaluate(() => sessionStorage.getItem('warden.console.token')) === null, 'no token kept');
  await context.close();

  expect(problems.length === 0, problems.join('\n'));
  console.log('console OIDC e2e: all expectations met');
} finally {
  await browser.close();
}

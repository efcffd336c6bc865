// A real OpenID Connect provider (oidc-provider) for warden's OIDC tests.
// Started by tests/it/oidc_server.rs with PORT and REDIRECT_URIS (JSON);
// prints "ready" when it listens. Users log in through
// GET /interaction/<uid>/login?account=<id> (the test's stand-in for a login
// page), which also grants consent.
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = JSON.parse(process.env.REDIRECT_URIS);

// `roles` is a list for most accounts and a plain string for one: warden
// must accept both.
const accounts = {
  alice: { email: 'alice@oidc.example.org', roles: ['warden-user'] },
  bob: { email: 'bob@oidc.example.org', roles: ['warden-user'] },
  root: { email: 'root@oidc.example.org', roles: ['warden-user', 'warden-admin'] },
  solo: { email: 'solo@oidc.example.org', roles: 'warden-admin' },
  outsider: { email: 'outsider@oidc.example.org', roles: ['someone-else'] },
  // Attackers: an address nobody verified, and the address of warden's
  // local admin (tests/it/harness.rs ADMIN_EMAIL).
  unverified: { email: 'unverified@oidc.example.org', roles: ['warden-user'], emailVerified: false },
  copycat: { email: 'Admin@Example.org', roles: ['warden-user'] },
  // The normal user's address with a trailing space (ADMIN's sibling
  // USER_EMAIL): the same address once normalised.
  spacey: { email: 'user@example.org ', roles: ['warden-user'] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  // `other` is another application of the same provider: its ID tokens
  // are not meant for warden (wrong audience).
  clients: ['warden', 'other'].map((id) => ({
    client_id: id,
    client_secret: `${id}-client-secret`,
    redirect_uris: redirectUris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  // HS256 advertised too (as some providers do): ID tokens a client
  // verifies with its own client secret. warden must not accept those as
  // bearer tokens.
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['roles'] },
  // Scope claims go into the ID token too (warden reads roles from it).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['warden-test-cookie-key'] },
  ttl: { IdToken: Number(process.env.ID_TOKEN_TTL || 3600) },
  findAccount: async (ctx, id) => {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      claims: async () => ({ sub: id, email: account.email, email_verified: account.emailVerified ?? true, roles: account.roles }),
    };
  },
});
provider.proxy = false;

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  const match = url.pathname.match(/^\/interaction\/([^/]+)\/login$/);
  if (!match) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    const accountId = url.searchParams.get('account');
    if (!accounts[accountId]) {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown account' });
    }
    const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  } catch (error) {
    res.statusCode = 500;
    res.end(String(error));
  }
});
server.listen(port, '127.0.0.1', () => console.log('ready'));

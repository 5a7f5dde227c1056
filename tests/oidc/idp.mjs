// A real OpenID Provider for the tests: panva's oidc-provider (OpenID Certified), static clients.
//
//   KEYS_DIR=dir KIDS=k2,k1 PORT=0 node idp.mjs   -> prints "READY <issuer>"
//
// Signing keys: one RSA key per kid in KIDS, kept as KEYS_DIR/<kid>.pem (made when missing), so a
// test can sign tokens of its own with the provider's key and restart the provider with another
// key first (rotation). The first kid signs new tokens; all are published in the JWKS. Public
// keys are written next to them as <kid>.pub.pem.
//
// Clients: `svc-embed` / `svc-embed-secret` and `svc-other` / `svc-other-secret` get
// client-credentials access tokens (JWT, audience AUDIENCE); `gw-web` / `gw-web-secret` uses the
// authorization-code flow (redirect REDIRECT_URI). Logins are non-interactive: the user is the
// `login_hint` (default alice); users' groups come from USERS_JSON ({"alice": ["ml-eng"]}).
import Provider from 'oidc-provider';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPairSync, createPrivateKey, createPublicKey } from 'node:crypto';

const dir = process.env.KEYS_DIR || '.';
const kids = (process.env.KIDS || 'k1').split(',');
const keys = kids.map((kid) => {
  const file = path.join(dir, `${kid}.pem`);
  if (!fs.existsSync(file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }));
  }
  const key = createPrivateKey(fs.readFileSync(file));
  fs.writeFileSync(path.join(dir, `${kid}.pub.pem`), createPublicKey(key).export({ format: 'pem', type: 'spki' }));
  return { ...key.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
});
const AUD = process.env.AUDIENCE || 'urn:llmgate';
const REDIRECT = process.env.REDIRECT_URI || 'http://127.0.0.1:1/callback';
const USERS = JSON.parse(process.env.USERS_JSON || '{}');

const server = http.createServer();
await new Promise((r) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;

const service = (id) => ({
  client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'],
  redirect_uris: [], response_types: [],
});
const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [
    service('svc-embed'),
    service('svc-other'),
    {
      client_id: 'gw-web', client_secret: 'gw-web-secret',
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      redirect_uris: [REDIRECT],
    },
  ],
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, email_verified: true, groups: USERS[sub] || [] }),
  }),
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['groups'] },
  // Users' access tokens carry their groups, as most IdPs can be configured to do.
  extraTokenClaims: async (ctx, token) => (token.accountId ? { groups: USERS[token.accountId] || [] } : undefined),
  scopes: ['openid', 'email', 'profile', 'offline_access', 'llmgate'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUD,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'llmgate', audience: AUD, accessTokenTTL: 600, accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile offline_access');
    grant.addResourceScope(AUD, 'llmgate');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const accountId = details.params.login_hint || 'alice';
  const url = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId } }, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(url);
});
server.on('request', provider.callback());
console.log(`READY ${issuer}`);

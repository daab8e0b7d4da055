// A second, independent OpenID provider for the web sign-in tests: panva/oidc-provider
// (OpenID Certified), configured as a plain OIDC provider with nothing bridge-specific.
//
//   node server.mjs [PORT]        (or OIDC_PROVIDER_PORT; 0 or unset = a free port)
//
// Listens on 127.0.0.1 only; issuer http://127.0.0.1:<port>. Prints "READY <port>" on stdout
// once it accepts connections. One public client "idp-bridge" (no secret, PKCE S256 required);
// its redirect URIs come from OIDC_REDIRECT_URIS and OIDC_POST_LOGOUT_REDIRECT_URIS
// (space- or comma-separated). The built-in development interactions sign in any login with
// any password and ask for consent. Signing key: a fresh ES256 key per start.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function list(value, fallback) {
  const items = (value ?? '').split(/[\s,]+/).filter(Boolean);
  return items.length ? items : fallback;
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `es256-${randomBytes(6).toString('hex')}`,
    alg: 'ES256',
    use: 'sig',
  };
}

// Any login is an account: sub is the login itself; profile and email claims derive from it.
function account(id) {
  const name = id.charAt(0).toUpperCase() + id.slice(1);
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: `${name} Example`,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
      };
    },
  };
}

function configuration() {
  return {
    clients: [{
      client_id: process.env.OIDC_CLIENT_ID || 'idp-bridge',
      token_endpoint_auth_method: 'none',
      redirect_uris: list(process.env.OIDC_REDIRECT_URIS, ['http://localhost/auth/callback']),
      post_logout_redirect_uris: list(process.env.OIDC_POST_LOGOUT_REDIRECT_URIS,
        ['http://localhost/']),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
    }],
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    findAccount: async (_ctx, id) => account(id),
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
  };
}

function requestedPort() {
  const raw = process.argv[2] ?? process.env.OIDC_PROVIDER_PORT ?? '0';
  const port = Number.parseInt(raw, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid port ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return port;
}

// Listen first (so that port 0 can pick a free port), then build the provider whose issuer
// names the port actually bound; requests before that are answered 503.
let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
server.on('error', (err) => {
  console.error(`cannot listen on ${HOST}: ${err.message}`);
  process.exit(1);
});
server.listen(requestedPort(), HOST, () => {
  const { port } = server.address();
  const provider = new Provider(`http://${HOST}:${port}`, configuration());
  for (const event of ['server_error', 'authorization.error', 'grant.error',
    'end_session.error', 'userinfo.error']) {
    provider.on(event, (_ctx, err) => {
      console.error(`${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
    });
  }
  handler = provider.callback();
  console.log(`READY ${port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

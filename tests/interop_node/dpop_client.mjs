// An independent RFC 9449 client: panva's oauth4webapi performs a DPoP-bound token exchange
// (RFC 8693) at the bridge, a DPoP request to the example resource server and a DPoP-bound
// refresh, retrying once on use_dpop_nonce as RFC 9449 section 8 intends. Then it captures
// proofs oauth4webapi made (through its customFetch hook, without sending them) and presents
// them wrongly: replayed, for another URL, signed by another key. It prints one JSON object
// with what each step answered; tests/test_dpop_interop.py asserts on it.
//
// Input: a JSON object in the environment variable DPOP_INTEROP
//   { issuer, client_id, client_secret, subject_token, tenant, resource_url }
import * as oauth from 'oauth4webapi'

const input = JSON.parse(process.env.DPOP_INTEROP)
const insecure = { [oauth.allowInsecureRequests]: true } // http on loopback only
const issuer = new URL(input.issuer)
const client = { client_id: input.client_id }
const clientAuth = oauth.ClientSecretBasic(input.client_secret)
const out = {}

async function withNonceRetry (call) {
  try {
    return await call()
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) { // the handle has cached the server's nonce
      out.nonce_retries = (out.nonce_retries || 0) + 1
      return await call()
    }
    throw err
  }
}

// A proof oauth4webapi would send with this request, captured instead of sent.
async function captureProof (dpop, accessToken, method, url) {
  let proof
  await oauth.protectedResourceRequest(accessToken, method, url, new Headers(), null, {
    DPoP: dpop,
    ...insecure,
    [oauth.customFetch]: async (_url, init) => {
      proof = new Headers(init.headers).get('dpop')
      return new Response('{}', { status: 200, headers: { 'content-type': 'application/json' } })
    }
  })
  return proof
}

async function present (accessToken, proof, url, method = 'GET') {
  const response = await fetch(url, {
    method, headers: { authorization: `DPoP ${accessToken}`, dpop: proof }
  })
  const body = await response.json().catch(() => ({}))
  return { status: response.status, error: body.error, challenge: response.headers.get('www-authenticate') }
}

const as = await oauth.processDiscoveryResponse(
  issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
out.dpop_signing_alg_values_supported = as.dpop_signing_alg_values_supported

const keyPair = await oauth.generateKeyPair('ES256')
const dpop = oauth.DPoP(client, keyPair)

// 1. The token exchange with a DPoP proof.
let tokenProof
const exchanged = await withNonceRetry(async () => {
  const response = await oauth.genericTokenEndpointRequest(as, client, clientAuth,
    'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: input.subject_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      tenant: input.tenant
    }, {
      DPoP: dpop,
      ...insecure,
      [oauth.customFetch]: (url, init) => {
        tokenProof = new Headers(init.headers).get('dpop')
        return fetch(url, init)
      }
    })
  return oauth.processGenericTokenEndpointResponse(as, client, response)
})
out.exchange = { token_type: exchanged.token_type, scope: exchanged.scope }

// 2. The resource request with a DPoP proof.
const url = new URL(`${input.resource_url}/tenants/${input.tenant}/payments`)
const resource = await withNonceRetry(() => oauth.protectedResourceRequest(
  exchanged.access_token, 'GET', url, new Headers(), null, { DPoP: dpop, ...insecure }))
out.resource = { status: resource.status, body: await resource.json() }

// 3. The refresh, bound to the same key.
const refreshed = await withNonceRetry(async () => oauth.processRefreshTokenResponse(
  as, client, await oauth.refreshTokenGrantRequest(as, client, clientAuth,
    exchanged.refresh_token, { DPoP: dpop, ...insecure })))
out.refresh = { token_type: refreshed.token_type, rotated: refreshed.refresh_token !== exchanged.refresh_token }
const again = await withNonceRetry(() => oauth.protectedResourceRequest(
  refreshed.access_token, 'GET', url, new Headers(), null, { DPoP: dpop, ...insecure }))
out.resource_after_refresh = { status: again.status }

// 4. Proofs presented wrongly.
const token = refreshed.access_token
const used = await captureProof(dpop, token, 'GET', url)
out.first_use = await present(token, used, url)
out.replayed = await present(token, used, url)
const otherUrl = new URL(`${input.resource_url}/tenants/${input.tenant}/ebics`)
out.another_url = await present(token, await captureProof(dpop, token, 'GET', url), otherUrl)
const stranger = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
out.another_key = await present(token, await captureProof(stranger, token, 'GET', url), url)
out.as_bearer = await (async () => {
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } })
  return { status: response.status, error: (await response.json()).error }
})()
// The token endpoint's proof of step 1, replayed with a fresh request.
const replayAtToken = await fetch(as.token_endpoint, {
  method: 'POST',
  headers: {
    authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(input.client_id)}:${encodeURIComponent(input.client_secret)}`).toString('base64'),
    'content-type': 'application/x-www-form-urlencoded',
    dpop: tokenProof
  },
  body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshed.refresh_token ?? exchanged.refresh_token })
})
out.token_proof_replayed = { status: replayAtToken.status, error: (await replayAtToken.json()).error }

console.log(JSON.stringify(out))

"""Web pages: SSO sign-in (OpenID Connect, Authlib's Flask client) and the pages built on it."""

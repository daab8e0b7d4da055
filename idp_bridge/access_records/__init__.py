"""The access-record ingest endpoint (``POST /access-records``, issue 14): resource servers
(``scopes.guard``) report the requests they authorised with advisor and guest tokens."""

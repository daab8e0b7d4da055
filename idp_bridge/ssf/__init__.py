"""The revocation feed: a Shared Signals Framework transmitter (docs/revocation-feed.md).

``rfc8417`` builds Security Event Tokens carrying CAEP ``session-revoked`` events,
``streams`` keeps receivers' streams and what each acknowledged, ``rfc8936`` is poll
delivery (with long polling), ``rfc8935`` push delivery, ``views`` the HTTP routes.
"""

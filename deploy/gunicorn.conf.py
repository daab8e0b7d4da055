"""gunicorn settings for the bridge (``gunicorn -c deploy/gunicorn.conf.py 'idp_bridge.wsgi:app'``).

``idp-bridge serve`` applies the same values; the settings themselves come from the
IDP_BRIDGE_* environment (README, Configuration).
"""

import os

bind = os.environ.get("IDP_BRIDGE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("IDP_BRIDGE_WORKERS", "2"))
# Threads: revocation-feed long polls (RFC 8936) hold a request for up to 15 s.
worker_class = "gthread"
threads = 32
keepalive = 5
timeout = 60
graceful_timeout = 20
accesslog = None  # request lines could carry tokens in query strings of misbehaving clients
errorlog = "-"


def post_worker_init(worker):
    from idp_bridge.app import services
    from idp_bridge.wsgi import app

    services(app).start_background()

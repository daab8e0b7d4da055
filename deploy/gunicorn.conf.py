"""gunicorn settings for the bridge (``gunicorn -c deploy/gunicorn.conf.py 'idp_bridge.wsgi:app'``,
the Dockerfile's default command).

The values are ``idp-bridge serve``'s own (``idp_bridge.cli.gunicorn_options``), so that the
two ways of starting the bridge cannot drift apart; deploy/compose.yaml and the topology test
(tests/test_topology_nginx.py) use ``idp-bridge serve``. Bind address and worker count come
from IDP_BRIDGE_BIND and IDP_BRIDGE_WORKERS here; the settings themselves from the
IDP_BRIDGE_* environment (README, Configuration). deploy/nginx/bridge.conf keeps its upstream
keepalive below ``keepalive``.
"""

import os

from idp_bridge.cli import gunicorn_options

_options = gunicorn_options(os.environ.get("IDP_BRIDGE_BIND", "127.0.0.1:8000"),
                            int(os.environ.get("IDP_BRIDGE_WORKERS", "2")))
bind = _options["bind"]
workers = _options["workers"]
# Threads: revocation-feed long polls (RFC 8936) hold a request for up to 25 s.
worker_class = _options["worker_class"]
threads = _options["threads"]
keepalive = _options["keepalive"]
timeout = _options["timeout"]
graceful_timeout = _options["graceful_timeout"]
accesslog = _options["accesslog"]  # None: request lines could carry tokens in query strings
errorlog = _options["errorlog"]


def post_worker_init(worker):
    from idp_bridge.app import services
    from idp_bridge.wsgi import app

    services(app).start_background()

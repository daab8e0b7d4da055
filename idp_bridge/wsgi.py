"""WSGI entry points: ``idp_bridge.wsgi:app`` for any WSGI server, and gunicorn embedding."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


class GunicornApplication(BaseApplication):
    """Gunicorn with our settings; each worker builds its own app (after fork)."""

    def __init__(self, settings, options: dict):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app, services

        app = create_app(self.settings)
        services(app).start_background()
        return app


def __getattr__(name):
    # ``gunicorn idp_bridge.wsgi:app`` builds the app from the environment on first access.
    if name == "app":
        from .app import create_app

        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)

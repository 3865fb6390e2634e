"""The judge app: a tablet web app (HTML, CSS, JavaScript modules in ``static/``, no build step),
served by the box at ``/`` on the tablet port and speaking the tablet protocol like any client."""

from edge_api.webapp.routes import STATIC_DIR, webapp_handlers

__all__ = ["STATIC_DIR", "webapp_handlers"]

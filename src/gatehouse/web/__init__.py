"""The browser console: server-rendered pages (Jinja2) at `/` and `/console/...` over the same JSON API every
other client uses, a little JavaScript for changes and live state, and static assets served by Gatehouse.

Pages read through `api.py` (an in-process request to the API with the caller's own session cookie), so a page
shows exactly what the API lets its viewer see; changes are made by the browser calling the API itself (session
cookie + CSRF header), so the page and the API cannot disagree about who may do what.
"""

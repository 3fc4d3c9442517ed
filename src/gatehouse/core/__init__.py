"""Infrastructure every domain stands on: logging, metrics, ids, background tasks, schedules, the bus and the
live feed, the ASGI middleware and transport. Nothing here imports a domain, the settings or the database."""

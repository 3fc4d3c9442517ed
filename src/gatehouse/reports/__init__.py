"""Usage and spend reports: the request log summed by user, group, key, model, upstream and surface, in the
database (GET /admin/usage/report, `gatehouse usage report`)."""

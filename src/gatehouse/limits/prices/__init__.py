"""The price table: what a model costs per million tokens, versioned (a change applies from its time on, so a
request keeps the price of its time), and the cost of a request in exact integers.

`table` holds every version in memory on each replica (the hot path never reads the database for a price),
`service` changes them (audited, one version per change), `config` applies GATEHOUSE_CONFIG's `prices:`,
`routes` is /admin/prices.
"""

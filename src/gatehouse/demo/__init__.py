"""Demo data: `gatehouse demo` seeds a fresh database with sample people, groups, keys and real traffic through the
built-in demo model; `gatehouse demo reset` removes exactly what it made and seeds again."""

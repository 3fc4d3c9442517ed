"""Budgets of users, groups and keys: their limits (set and read), and the state of each budget."""

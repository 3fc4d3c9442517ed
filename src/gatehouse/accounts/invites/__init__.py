"""Invites: one-time (or n-time) tokens that let someone sign up."""

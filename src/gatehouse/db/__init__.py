"""Database: engine, declarative base, sessions and Alembic migrations."""

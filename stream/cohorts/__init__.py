"""Cohorts: definitions compiled once (``rules``), per-user state (``membership``), sync files (``csvfiles``)."""

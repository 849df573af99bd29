"""Importers that bring published SDG data into core records."""

"""Read models for pages: SQL that aggregates, sorts and pages in the database."""

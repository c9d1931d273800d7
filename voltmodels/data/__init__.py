"""Data: raw electrode tables from a snapshot or the MP API, curation, splits, curated datasets."""

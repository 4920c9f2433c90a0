"""Data: the contract, ingestion into immutable snapshots, offline tables, built-in cohort."""

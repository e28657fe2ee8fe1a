"""Data stage: LLaVA JSON/JSON-lines + images -> parquet shards (Ray Data), with every bad row quarantined."""

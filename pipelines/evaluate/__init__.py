"""Batch evaluation: benchmarks (pipelines/benchmarks) answered by LLaVA-SP models on Ray Data, scored, in MLflow."""

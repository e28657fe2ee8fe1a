"""Training stage: both LLaVA-SP stages on Ray Train with DeepSpeed, tracked in MLflow."""

"""The Ray layer of the LLaVA-SP pipeline: data (Ray Data), train (Ray Train + DeepSpeed), serve (Ray Serve),
evaluate, tracking (MLflow), synthetic. Imports sp_core, never the other way round."""

"""Ray Serve: an OpenAI-compatible chat endpoint over LLaVA-SP models (app.py), built from ServeConfig (config.py)."""

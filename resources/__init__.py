"""Resources: the LLM client and its response cache, DuckDB storage, local models."""

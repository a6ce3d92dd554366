"""Call analysis: the structured result an LLM returns for one call, validated by pydantic."""

"""The LLM architect: explanations and proposals from an OpenAI-compatible model, never trusted, always verified."""

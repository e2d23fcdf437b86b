"""The HTTP face of ollama_nb: Ollama's native API and the OpenAI API on aiohttp."""

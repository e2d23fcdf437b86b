"""Models on disk, as Ollama stores them: store, manifests, GGUF metadata, Modelfile, options, spec, create."""

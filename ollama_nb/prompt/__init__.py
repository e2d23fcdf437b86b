"""What the model actually sees: Go templates, prompt building, tool-call parsing."""

"""The ground floor: errors, settings read from the environment, model names, durations."""

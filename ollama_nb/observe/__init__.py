"""Every request's timings: the metrics recorder and the plots made from it."""

"""Workers other than the browser page: the built-in models' reference and the simulated worker."""

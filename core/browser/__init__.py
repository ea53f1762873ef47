"""Real browsers as workers: launching, killing and sweeping them, and driving them over CDP."""

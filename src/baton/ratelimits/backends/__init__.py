"""Where limits are shared: the run store (`store.py`)."""

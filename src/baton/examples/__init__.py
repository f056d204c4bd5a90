"""Example applications built on baton, shipped with it."""

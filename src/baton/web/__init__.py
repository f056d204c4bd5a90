"""The HTTP side of baton: the API of `baton serve`."""

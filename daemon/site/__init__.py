"""The site daemon: the I/O shell around the controller core (inputs, executor, loop, fast path)."""

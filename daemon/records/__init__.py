"""Records: the journal, compliance reports read from it, and `mulletd status` over the HTTP API."""

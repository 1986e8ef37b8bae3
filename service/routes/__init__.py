"""HTTP routes: thin handlers that validate, call the batcher and shape the response."""

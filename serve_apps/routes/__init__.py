"""The API's routes, one module per resource; each takes its replica's state from `context()`."""

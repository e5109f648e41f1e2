"""Privacy: the analysts' masked views, erasure of a person on request, and the suppression list."""

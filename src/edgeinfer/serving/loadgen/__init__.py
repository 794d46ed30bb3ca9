"""Closed- and open-loop load generation against a running server."""

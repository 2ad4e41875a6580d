"""HTTP routes: each parses input, calls one domain function, shapes the response."""

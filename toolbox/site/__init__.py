"""The static site over every run (invoke site): index, run pages, trends, hosts, campaigns, public figures."""

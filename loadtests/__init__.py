"""Locust scenarios for agent floods against popgate (see loadtests/README.md)."""

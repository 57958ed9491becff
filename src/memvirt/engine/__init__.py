"""Simulated time: the cost model and the event loop that runs vCPUs in quanta."""

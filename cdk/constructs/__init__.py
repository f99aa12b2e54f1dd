"""One construct per concern: storage, functions, api, workflow, inference, observability.

Each takes its dependencies as typed keyword arguments and exposes what it creates as attributes.
"""

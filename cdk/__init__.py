"""CDK constructs, one per concern (storage, API, functions, workflow, inference, observability).

Not built yet: they arrive with the infrastructure issue; app.py composes them.
"""

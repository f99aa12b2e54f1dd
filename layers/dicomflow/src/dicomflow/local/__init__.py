"""The local stack: an embedded moto server for AWS and a localhost gateway for the APIs.

Small and general on purpose: the workflow issue extends it into the full local stack.
"""

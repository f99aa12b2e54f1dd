"""The CDK app's constructs, one per concern, composed by :mod:`cdk.stack`; app.py reads the context."""

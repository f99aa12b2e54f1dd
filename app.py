"""The CDK app: composes the dicomflow stack. Configuration comes from cdk.json context, read only here.

Not built yet: the stack and its constructs arrive with the infrastructure issue (see DESIGN.md).
"""

import sys

if __name__ == "__main__":
    sys.exit("app.py: the CDK stack is not built yet; it comes with the infrastructure issue.")

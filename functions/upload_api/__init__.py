"""The upload API Lambda function (API Gateway REST, IAM auth)."""

"""Data access: DynamoDB (clients, calls, counters, runs, locks), S3 and Secrets Manager."""

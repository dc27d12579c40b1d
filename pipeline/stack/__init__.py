"""The embedded local stack: a SeaweedFS S3 server and an MLflow server on loopback, started and stopped by PID."""

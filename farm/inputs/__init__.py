"""The job's inputs made on the host: the user's data or synthetic samples, --output and --metric."""

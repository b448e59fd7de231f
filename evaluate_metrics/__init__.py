"""The ``evaluate`` metric folders, shipped in the wheel as ``xl_suite.evaluate_metrics`` (see xl_suite.metric_path)."""

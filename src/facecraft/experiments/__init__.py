"""Pipelines, configs, results and the report."""

"""Monitoring: reference profiles and drift statistics (pure), the monitoring actor, retrain policy."""

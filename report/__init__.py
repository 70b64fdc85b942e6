"""What summarize.py reports on a results tree (report/status.py: the runs by state)."""

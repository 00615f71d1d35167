"""The analyst's report: report.html and the per-site plots."""

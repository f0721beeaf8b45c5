"""The run stage: one engine for run, matrix, resume and pytest; checks, retries, baseline, tuning."""

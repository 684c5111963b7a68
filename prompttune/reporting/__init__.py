"""`prompttune report`: reading run dirs, grouping, statistics, tables, plots and the report files."""
